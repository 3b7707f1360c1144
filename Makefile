# Two commands on a fresh machine: `make run` (serve on embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint typecheck pytest bench key clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install  ## apply migrations and serve http://$(HOST):$(PORT) (SQLite + data under ./data)
	@echo "No API key yet? In another shell: $(BIN)/python -m service keys create --project default --admin"
	@echo "  (or start with FT_BOOTSTRAP_API_KEY=<40 random characters> make run)"
	$(BIN)/python -m service serve --host $(HOST) --port $(PORT)

key: install  ## create an admin key in project 'default'; the key is the last line
	$(BIN)/python -m service keys create --project default --admin

test: install lint typecheck pytest  ## everything CI runs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check service alembic

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/validation_throughput.py
	$(BIN)/python bench/job_reads.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
