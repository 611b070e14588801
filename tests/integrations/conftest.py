"""Fixtures of the integration tests: a mosquitto broker per test (skipped without the binary)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integrations.broker import MOSQUITTO_SKIP, Mosquitto, find_mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if find_mosquitto() is None:
        pytest.skip(MOSQUITTO_SKIP)
    server = Mosquitto(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.kill()
