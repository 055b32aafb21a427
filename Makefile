# gymchurn: every command a user types is a target here; `make help` lists them.
# Options are passed as make variables and become Hydra overrides, e.g.
#   make experiment model=xgb features=raw tune=fast
#   make experiment args="tune.n_trials=80 threshold.rule=cost"

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST := 127.0.0.1
PORT ?= 5000
STORE := sqlite:///$(CURDIR)/mlruns/mlflow.db

# Config groups and keys that may be given as make variables.
OVERRIDE_VARS := model features tune data tracking experiment threshold seed workers
OVERRIDES = $(foreach v,$(OVERRIDE_VARS),$(if $($(v)),$(v)=$($(v)))) $(args)

.DEFAULT_GOAL := help
.PHONY: help install experiment compare ui test test-fast lint clean-outputs

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (every target does this first)

experiment: $(STAMP) ## tune, evaluate, track and register a churn model: model=lgbm features=engineered tune=default
	$(BIN)/python -m gymchurn.experiment $(OVERRIDES)

compare: $(STAMP) ## run every model family and print one leaderboard: features=... tune=...
	$(BIN)/python -m gymchurn.compare $(OVERRIDES)

ui: $(STAMP) ## MLflow UI on the project's store at http://127.0.0.1:5000
	$(BIN)/mlflow server --backend-store-uri $(STORE) --artifacts-destination $(CURDIR)/mlruns/artifacts --host $(HOST) --port $(PORT)

test: $(STAMP) ## run the whole test suite (what CI runs)
	$(BIN)/python -m pytest

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests

clean-outputs: ## remove Hydra output folders (the MLflow store in mlruns/ is kept)
	rm -rf outputs
