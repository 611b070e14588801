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

# pytest exit code 5 (no tests collected) fails like any other non-zero code.
# `test` runs everything (the README's command and CI's); `test-fast` is the quick loop:
# it leaves out tests marked `slow` (soak, RTSP server, run.py subprocesses, real models).
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

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
