"""Benchmarks: each prints JSON figures (python -m bench.<name>); never run by the tests."""
