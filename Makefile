# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := data/demo

OUT ?= reports_out
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install catalogs checkers messages system-deps demo demo-cluster airflow test lint bench bench-ab mutation clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: $(STAMP) catalogs checkers  ## create .venv and install the project with every extra (idempotent)

checkers: node_modules/.installed  ## the page checkers make test runs: vnu.jar and axe-core from npm (package-lock.json)

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get \
	  install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

CATALOGS := $(patsubst %.po,%.mo,$(wildcard etl/locale/*/LC_MESSAGES/messages.po))
catalogs: $(CATALOGS)  ## compile the translations (etl/locale/*/LC_MESSAGES/messages.po -> .mo)

etl/locale/%/LC_MESSAGES/messages.mo: etl/locale/%/LC_MESSAGES/messages.po $(STAMP)
	$(BIN)/pybabel -q compile -d etl/locale -D messages -l $*

messages: install  ## after changing a message: extract them all again and merge them into every catalog (then translate what is new)
	$(BIN)/pybabel -q extract -F babel.cfg -k N_ -k _ -k gettext -k ngettext:1,2 --no-location --omit-header \
	  --sort-output -o etl/locale/messages.pot .
	$(BIN)/pybabel -q update -i etl/locale/messages.pot -d etl/locale -D messages --ignore-pot-creation-date \
	  --no-fuzzy-matching --width 120

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[airflow,dev]'
	@touch $(STAMP)

system-deps:  ## Debian packages the tests need (headless Chromium, Ceph's RADOS Gateway, PostgreSQL and Redis for the cluster, Java for the HTML checker), installed only when missing
	@command -v chromium >/dev/null && command -v radosgw >/dev/null && command -v ceph-osd >/dev/null \
	  && command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && command -v java >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	  --no-install-recommends chromium fonts-dejavu-core radosgw ceph-mon ceph-osd postgresql redis-server \
	  default-jre-headless >/dev/null; }

demo: install  ## the nightly job end to end: synthetic events, loopback S3 + SMTP, the real DAG (airflow dags test)
	rm -rf $(DEMO) $(OUT)/[0-9]* $(OUT)/index.html $(OUT)/filtered $(OUT)/_runs $(OUT)/_outbox $(OUT)/archive
	$(BIN)/python scripts/demo.py --data $(DEMO) --out $(OUT)

demo-cluster: install system-deps  ## the same night on a production-shaped Airflow: PostgreSQL, CeleryExecutor + Redis, two workers sharing only S3; prints one JSON line
	$(BIN)/python scripts/demo_cluster.py

airflow: install  ## Airflow UI on the demo's data: airflow standalone on http://127.0.0.1:8080 (Ctrl-C stops it)
	AIRFLOW_HOME=$(CURDIR)/airflow_home AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080 \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8080/execution/ \
	CONTACTS_REPORT_LANDING=$(CURDIR)/$(DEMO)/landing CONTACTS_REPORT_WAREHOUSE=$(CURDIR)/$(DEMO)/warehouse \
	CONTACTS_REPORT_OUT=$(CURDIR)/$(OUT) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

bench: install  ## benchmarks against a DuckDB reference in the same run (not part of make test; ~60 min on 2 cores, ~14 GB of bench/data)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

bench-ab: install  ## the ETL of BASE (default HEAD) against the working tree: make bench-ab BASE=main~1 SIZE=1M
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/ab.py --base $(or $(BASE),HEAD) --size $(or $(SIZE),10M)

mutation: install  ## mutation testing of the core modules (mutmut, each module against its own tests; a sample of one mutant in ten, ~20 min on 2 cores; ARGS="--every 1" for all, "--module NAME" for one; not part of make test): mutation_score=NN%
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	$(BIN)/python tools/mutation.py $(ARGS)

lint: install  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install system-deps lint  ## every test (pytest exit 5, "no tests", fails the target)
	$(BIN)/pytest

clean:  ## remove generated data and outputs (keeps .venv)
	rm -rf data airflow_home test-artifacts mutants build/mutation reports_out/* .pytest_cache .mypy_cache .ruff_cache
