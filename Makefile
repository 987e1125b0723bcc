# One command per developer task. Each target sets up what it needs itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,test]"
	touch $(STAMP)

demo: $(STAMP)  ## server + worker + a client that watches and answers a task
	$(BIN)/python -m examples.demo

test: $(STAMP)  ## the whole suite, on a Redis, workers and a server it starts itself
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
