# One command per developer task. Each target sets up what it needs itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check docs bench bench-idle soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

demo: $(STAMP)  ## server + worker + a client that watches and answers a task
	$(BIN)/python -m examples.demo

test: $(STAMP)  ## the whole suite, on a Redis, workers and a server it starts itself
	$(BIN)/python -m pytest

check: $(STAMP)  ## lint, formatting and strict types, as CI runs them before the tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)  ## the documentation site (mkdocs.yml, docs/) into build/site/; warnings are errors
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m pip install --quiet --no-deps "aiecs>=2.2"  # only its websocket_manager.py is loaded
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## celery-ws vs the peers; tables, JSON and plots in benchmarks/results/
	$(BIN)/python -m benchmarks.run

bench-idle: $(BENCH_STAMP)  ## 15,000 idle connections on one server: memory per connection, delivery p99 (~5 min)
	$(BIN)/python -m benchmarks.run --only idle

soak: $(BENCH_STAMP)  ## the 30-minute soak: connections churning and resuming, tokens expiring, stalled clients, tasks running
	$(BIN)/python -m benchmarks.run --soak 1800

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
