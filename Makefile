# WorkDataHub: every target bootstraps what it needs (uv, the venv, dependencies, dbt manifest).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
TOOLS := $(CURDIR)/.wdh/tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := $(CURDIR)/.venv
RUN := $(VENV)/bin
# the state folder (embedded Postgres, Dagster's instance) as the settings see it
export WDH_HOME ?= $(CURDIR)/.wdh
export DAGSTER_HOME := $(abspath $(WDH_HOME))/dagster
# the demo's sample workbooks, unless the environment points at the operators' share
export WDH_DATA_DIR ?= $(CURDIR)/data/sample
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: help setup demo test dev lint format manifest bench screenshot shell clean stop

help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(TOOLS)/bin/uv:
	@command -v uv >/dev/null 2>&1 || { \
	  echo "installing uv into $(TOOLS)"; \
	  $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv; }

$(VENV)/.synced: pyproject.toml uv.lock | $(TOOLS)/bin/uv
	@# compiled now: Python here never writes .pyc files itself (PYTHONDONTWRITEBYTECODE), so
	@# without this every process compiles what it imports (Dagster: 10 s instead of 3 s)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $@

# `make dev`'s code location, named `workdatahub` as pyproject.toml names it for the
# `dagster` commands run from here (`dagster sensor start workbook_arrival`) and as
# production's workspace.yaml does: served as `workdatahub.definitions` (-m), the sensor those
# commands started was another location's, and never ran
$(DAGSTER_HOME)/workspace.yaml: Makefile
	@mkdir -p $(DAGSTER_HOME)
	@printf 'load_from:\n  - python_module:\n      module_name: workdatahub.definitions\n      location_name: workdatahub\n      working_directory: %s\n' '$(CURDIR)' > $@

manifest: $(VENV)/.synced ## parse the dbt project (target/manifest.json) for Dagster
	@# with the connection Dagster's dbt steps use, or each step parses it all again
	$(RUN)/wdh dbt-parse

setup: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml manifest ## uv, venv, dependencies, dbt manifest, sheet scanner
	@# the state (the warehouse's data, Dagster's runs and logs) is this user's alone
	@chmod go-rwx $(WDH_HOME)
	@# the sheet scanner (C) compiled now rather than by the first load; without a compiler
	@# this says so once, and sheets are read with fastexcel
	@$(RUN)/python -c "from workdatahub.excel import native; native.library()"

demo: setup ## sample workbooks → embedded Postgres → Dagster (raw + dbt), then a summary
	$(RUN)/wdh demo

test: setup ## the whole suite (pure core, warehouse, dbt, Dagster, CLI)
	$(RUN)/pytest -q -p no:cacheprovider

# the UI has no login: this machine only, unless DEV_HOST says otherwise (docs/deploy.md)
DEV_HOST ?= 127.0.0.1

dev: setup $(DAGSTER_HOME)/workspace.yaml ## Dagster UI on http://localhost:3000 (the embedded warehouse migrated first)
	@# (the settings decide, .env included: an external warehouse is migrated by its owner)
	@if $(RUN)/python -c "from workdatahub.settings import get_settings as s; raise SystemExit(not s().embedded)" 2>/dev/null; \
	  then $(RUN)/wdh db upgrade; fi
	@# (started in the instance's folder: from here Dagster warns that ./dagster.yaml, which
	@# setup copies there, "will not be used")
	cd $(DAGSTER_HOME) && $(RUN)/dagster dev -w workspace.yaml -h $(DEV_HOST) -p 3000

bench: setup ## benchmark: WorkDataHub vs the naive stack at 50k and 500k rows (bench/results.json)
	$(RUN)/python bench/run.py

screenshot: setup ## docs/asset-graph.png of the UI's asset graph (installs Debian's chromium if missing)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk; }
	$(RUN)/python scripts/screenshot.py

lint: setup ## ruff (lint + format check) and mypy
	$(RUN)/ruff check workdatahub tests bench scripts
	$(RUN)/ruff format --check workdatahub tests bench scripts
	$(RUN)/mypy

format: setup ## apply ruff formatting and fixes
	$(RUN)/ruff format workdatahub tests bench scripts
	$(RUN)/ruff check --fix workdatahub tests bench scripts

shell: setup ## psql on the warehouse
	$(RUN)/wdh db shell

stop: ## stop the embedded Postgres
	-$(RUN)/wdh db stop

clean: stop ## remove the venv, state (embedded Postgres, Dagster) and dbt artefacts
	rm -rf $(VENV) .wdh dbt_project/target dbt_project/logs data/sample
