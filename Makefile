# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo

.PHONY: install demo test lint unit bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(STAMP)  ## create .venv and install the project with every extra (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[airflow,dev]'
	@touch $(STAMP)

demo: install  ## generate ~60 days of events for three dozen workspaces and run the nightly ETL over them
	rm -rf $(DEMO)
	$(BIN)/contacts-report generate --landing $(DEMO)/landing --days 60 --workspaces 36 --events-per-day 3000
	$(BIN)/contacts-report etl --landing $(DEMO)/landing --warehouse $(DEMO)/warehouse --all > $(DEMO)/etl-runs.ndjson
	@$(BIN)/python scripts/demo_summary.py $(DEMO)

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint  ## every test (pytest exit 5, "no tests", fails the target)
	$(BIN)/pytest

clean:  ## remove generated data and outputs (keeps .venv)
	rm -rf data reports_out/* .pytest_cache .mypy_cache .ruff_cache
