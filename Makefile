# AdaFace Stream — one entry point for set-up, demo, tests and checks.
# `make setup` is idempotent: it only reinstalls when a requirements file changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REQS   := requirements/torch.txt requirements/lock.txt requirements/nodeps.txt
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint check bench clean-venv config-reference

setup: $(STAMP)

$(STAMP): $(REQS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python >= 3.11 is needed (set PYTHON=...)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/torch.txt -r requirements/lock.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/nodeps.txt
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

demo: setup
	$(PY) run.py

# `test` runs everything (the README's command and CI's): the tests marked `serial` (wall-clock
# bounds) run alone after the rest ran on TEST_WORKERS workers (pytest-xdist). pytest exit code 5 (no
# tests collected) fails the first run like any other non-zero code; the serial run may select
# nothing when PYTEST_ARGS narrows it (-k ...). `test-fast` is the quick loop: it leaves out tests
# marked `slow` (soak, RTSP server, run.py subprocesses, real models).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not serial" $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || test $$? -eq 5

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

# Lint and types (mypy with the pydantic plugin, settings in pyproject.toml); CI runs it before the tests.
check: lint
	$(PY) -m mypy

bench: setup
	$(PY) -m bench

clean-venv:
	rm -rf $(VENV)

config-reference: setup
	$(PY) -m scripts.update_readme_reference
