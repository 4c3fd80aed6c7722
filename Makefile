# The project's interface: make run | test | lint | bench. Everything installs itself into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export AFDB_PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint bench install clean test-deps

run: $(STAMP)  ## set up, create the embedded database with demo data, serve on 127.0.0.1:$AFDB_PORT
	$(BIN)/afdb init --demo
	@echo "AutoForgeNexus data platform: http://127.0.0.1:$(AFDB_PORT)/  (Ctrl-C stops)"
	$(BIN)/afdb serve --port $(AFDB_PORT)

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/autoforge_data/vector/*.[ch])
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test-deps: $(STAMP)
	scripts/ensure-redis
	scripts/ensure-sqld $(VENV)
	scripts/ensure-promtool
	scripts/ensure-chromium

test: test-deps  ## install what the tests need (redis-server, sqld) and run them
	$(BIN)/pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: test-deps  ## benchmarks against same-run baselines; results in bench/results/
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/db.py
	$(BIN)/python bench/durability.py
	$(BIN)/python bench/vector.py
	$(BIN)/python bench/vector_tuning.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/ops.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
