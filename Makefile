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
SERVE_PORT ?= 5001
STORE := sqlite:///$(CURDIR)/mlruns/mlflow.db

# Config groups and keys that may be given as make variables.
OVERRIDE_VARS := model features tune data tracking experiment threshold seed workers clustering \
	input output reasons version force model_name reason
OVERRIDES = $(foreach v,$(OVERRIDE_VARS),$(if $($(v)),$(v)=$($(v)))) $(args)

.DEFAULT_GOAL := help
.PHONY: help install experiment compare segment ui test test-fast lint clean-outputs \
	promote rollback predict serve report bench

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

compare: $(STAMP) ## every model family x feature set (a Hydra multirun), one leaderboard: model=lgbm,xgb features=raw tune=fast
	$(BIN)/python -m gymchurn.experiment --multirun experiment=compare $(OVERRIDES)

segment: $(STAMP) ## tune, describe, track and register customer segments: clustering=kmeans tune=default
	$(BIN)/python -m gymchurn.segment $(patsubst tune=%,segment_tune@tune=%,$(OVERRIDES))

promote: $(STAMP) ## move @champion to the challenger if it is better on the same holdout: model_name=... version=N force=true
	$(BIN)/python -m gymchurn.promote $(OVERRIDES)

rollback: $(STAMP) ## move @champion back to @previous-champion: model_name=...
	$(BIN)/python -m gymchurn.promote action=rollback $(OVERRIDES)

predict: $(STAMP) ## score customers with the champion: input=new.csv output=scores.csv reasons=flagged|all|none
	$(BIN)/python -m gymchurn.predict $(OVERRIDES)

report: $(STAMP) ## retention-strategy report from both @champion models -> experiments/retention-strategy/
	$(BIN)/python -m gymchurn.report $(OVERRIDES)

serve: $(STAMP) ## REST scoring of gym-churn-classifier@champion at http://127.0.0.1:5001/invocations
	PATH=$(CURDIR)/$(BIN):$$PATH MLFLOW_TRACKING_URI=$(STORE) $(BIN)/mlflow models serve -m models:/gym-churn-classifier@champion --env-manager local --host $(HOST) --port $(SERVE_PORT)

ui: $(STAMP) ## MLflow UI on the project's store at http://127.0.0.1:5000
	$(BIN)/mlflow server --backend-store-uri $(STORE) --artifacts-destination $(CURDIR)/mlruns/artifacts --host $(HOST) --port $(PORT)

test: $(STAMP) ## run the whole test suite (what CI runs), on two cores
	$(BIN)/python -m pytest -n 2 --dist load

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/python -m pytest -n 2 --dist load -m "not slow"

bench: $(STAMP) ## tracking overhead, 1 vs 2 workers, training and scoring up to 1M rows -> experiments/benchmarks.md
	$(BIN)/python benchmarks/bench.py $(args)

lint: $(STAMP) ## ruff (what CI runs besides the tests)
	$(BIN)/ruff check src tests benchmarks

clean-outputs: ## remove Hydra output folders (the MLflow store in mlruns/ is kept)
	rm -rf outputs
