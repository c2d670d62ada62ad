# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo

OUT ?= reports_out
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test lint bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(STAMP)  ## create .venv and install the project with every extra (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[airflow,dev]'
	@touch $(STAMP)

system-deps:  ## Debian packages the tests need (headless Chromium), installed only when missing
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

demo: install  ## ~60 days of synthetic events for three dozen workspaces -> warehouse -> pages of the latest night
	rm -rf $(DEMO) $(OUT)/[0-9]* $(OUT)/index.html $(OUT)/filtered
	$(BIN)/contacts-report generate --landing $(DEMO)/landing --days 60 --workspaces 36 --events-per-day 3000
	$(BIN)/contacts-report etl --landing $(DEMO)/landing --warehouse $(DEMO)/warehouse --all > $(DEMO)/etl-runs.ndjson
	$(BIN)/contacts-report render --warehouse $(DEMO)/warehouse --out $(OUT) --cutoff "$$(date -u +%Y-%m-%dT00:00Z)" \
	  > $(DEMO)/render.json
	@$(BIN)/python scripts/demo_summary.py $(DEMO) $(OUT)

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install system-deps lint  ## every test (pytest exit 5, "no tests", fails the target)
	$(BIN)/pytest

clean:  ## remove generated data and outputs (keeps .venv)
	rm -rf data reports_out/* .pytest_cache .mypy_cache .ruff_cache
