# Set-up commands that work on a fresh machine; each installs what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint unit integration e2e bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

# The main job: embedded broker, processors, SQLite sink, producers, web page, seed replay.
run: install
	NEWSFLOW_STOP_WITH_PARENT=true exec $(BIN)/newsflow run

# Debian packages some tests use (headless Chromium, PostgreSQL 15); installed only where
# we may (root with apt-get), otherwise those tests skip and say why.
system-deps:
	@bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check newsflow producers processors sinks tests benchmarks
	$(BIN)/mypy

test: install system-deps lint
	$(BIN)/pytest -q -ra

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

e2e: install
	$(BIN)/pytest -q tests/e2e

bench: install
	$(BIN)/python benchmarks/clustering.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
