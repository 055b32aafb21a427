# gymchurn: every command a user types is a target here; `make help` lists them.
# Options are passed as make variables and become Hydra overrides, e.g.
#   make experiment model=xgb features=raw tune=fast
#   make experiment args="tune.n_trials=80 threshold.rule=cost"
#   make predict input="my customers.csv"      (any character: values are data, never shell)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt
# The resolver `make lock` runs, pinned: the same pyproject.toml gives the same lock.
UV := uv==0.13.9
HOST := 127.0.0.1
PORT ?= 5000
SERVE_PORT ?= 5001
STORE := sqlite:///$(CURDIR)/mlruns/mlflow.db

# Config groups and keys that may be given as make variables.
OVERRIDE_VARS := model features tune data tracking experiment threshold seed workers clustering \
	input output output_dir name note reasons version force model_name reason
# Values are data, never shell or make code:
# - make exports every variable of its command line to the recipes, expanding it first (a
#   value `$(shell ...)` would run): each becomes a simple variable holding its text as typed;
# - a value never enters a recipe line, where the shell would run it (`input="x; rm ..."`): the
#   options are exported as GYMCHURN_MAKE_<name> and gymchurn.make_args turns them into Hydra
#   overrides, then `args` into words (split by shlex, in Python);
# - HOST, PORT, paths: one quoted shell word each (`quote` below).
CMDLINE_VARS := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v)))
# A misspelt option (`make promote verison=3`) would otherwise be dropped without a word, and
# the command run without it.
SETTING_VARS := PYTHON BIN HOST PORT SERVE_PORT STORE upgrade
UNKNOWN_VARS := $(filter-out $(OVERRIDE_VARS) args $(SETTING_VARS),$(CMDLINE_VARS))
ifneq ($(UNKNOWN_VARS),)
$(error unknown option(s): $(UNKNOWN_VARS). The options are $(OVERRIDE_VARS) and args="key=value ..." for any other Hydra override (servers: $(SETTING_VARS)))
endif
$(foreach v,$(CMDLINE_VARS),$(eval override $(v) := $$(value $(v)))$(eval export $(v)))
$(foreach v,$(OVERRIDE_VARS) args,$(eval export GYMCHURN_MAKE_$(v) := $$(value $(v))))
export GYMCHURN_MAKE_VARS := $(OVERRIDE_VARS)
unexport $(OVERRIDE_VARS) args
# The launcher prints the command it runs (as make would echo it), so recipes using it are @.
RUN = $(BIN)/python -m gymchurn.make_args
# One shell word holding a make value as it is (HOST, PORT, paths): the value itself when it
# is one word made only of characters the shell leaves alone (127.0.0.1, /x/.venv/bin), else
# '...' with each ' written as '\''.
PLAIN_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F G H I J K L M \
	N O P Q R S T U V W X Y Z 0 1 2 3 4 5 6 7 8 9 . _ / : + @ % , -
without = $(if $(2),$(call without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
quote = $(if $(filter-out 1,$(words $(1)))$(call without,$(1),$(PLAIN_CHARS)),'$(subst ','\'',$(1))',$(1))

.DEFAULT_GOAL := help
.PHONY: help install experiment compare segment ui test test-fast lint clean-outputs \
	promote rollback predict serve report monitor monitor-demo bench dashboard lock

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n",$$1,$$2}'

# Exactly the lock's versions (the ones CI tests, so two machines get the same), then the
# project itself without resolving again. pip check fails when the lock no longer satisfies
# pyproject.toml (a dependency added or a bound raised without `make lock`).
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check || { echo "error: $(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	touch $(STAMP)

install: $(STAMP) ## create .venv with the locked versions (requirements-lock.txt) and the project; every target does this first

lock: ## re-resolve requirements-lock.txt after editing pyproject.toml's dependencies (upgrade=1: newest allowed versions)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(UV)
	$(BIN)/uv pip compile --quiet pyproject.toml --all-extras --python-version 3.11 --python-platform linux \
		$(if $(upgrade),--upgrade) --custom-compile-command 'make lock' -o $(LOCK)

experiment: $(STAMP) ## tune, evaluate, track and register a churn model: model=lgbm features=engineered tune=default
	@$(RUN) gymchurn.experiment

compare: $(STAMP) ## every model family x feature set (a Hydra multirun), one leaderboard: model=lgbm,xgb features=raw tune=fast
	@$(RUN) gymchurn.experiment --multirun experiment=compare

segment: $(STAMP) ## tune, describe, track and register customer segments: clustering=kmeans tune=default
	@$(RUN) --rename tune=segment_tune@tune gymchurn.segment

promote: $(STAMP) ## move @champion to the challenger if it is better on the same holdout: model_name=... version=N force=true
	@$(RUN) gymchurn.promote

rollback: $(STAMP) ## move @champion back to @previous-champion: model_name=...
	@$(RUN) gymchurn.promote action=rollback

predict: $(STAMP) ## score customers with the champion: input=new.csv output=scores.csv reasons=flagged|all|none
	@$(RUN) gymchurn.predict

report: $(STAMP) ## retention-strategy report from both @champion models -> experiments/retention-strategy/
	@$(RUN) gymchurn.report

monitor: $(STAMP) ## judge the champion on a new month: input=month.csv (with Churn: realised performance) -> ok/watch/retrain, experiments/monitoring/<name>/
	@$(RUN) gymchurn.monitor

# SYNTHETIC demonstration (gymchurn/monitoring/demo.py): a model trained on generated history in
# a store of its own (mlruns/demo/), judged on three generated months; the reports are committed.
DEMO_DATA := data/monitoring-demo
DEMO_STORE := $(CURDIR)/mlruns/demo
DEMO_NOTE := SYNTHETIC demonstration month (make monitor-demo): generated data judged by a model trained on generated history, not the gym customers.
monitor-demo: $(STAMP) ## the monitoring reports of three SYNTHETIC months (like training, shifted, changed relationship) -> experiments/monitoring/
	$(BIN)/python -m gymchurn.monitoring.demo $(DEMO_DATA)
	mkdir -p $(DEMO_STORE)
	$(BIN)/python -m gymchurn.experiment data.path=$(CURDIR)/$(DEMO_DATA)/history.csv data.shared_path=null \
		data.url=null tracking.uri=sqlite:///$(DEMO_STORE)/mlflow.db \
		tune.storage=sqlite:///$(DEMO_STORE)/optuna.db tune=fast hydra.run.dir=$(DEMO_STORE)/hydra
	for month in like-training shifted changed-relationship; do \
		$(BIN)/python -m gymchurn.monitor input=$(DEMO_DATA)/$$month.csv name=synthetic-$$month \
			tracking.uri=sqlite:///$(DEMO_STORE)/mlflow.db alias=challenger segmentation.enabled=false \
			"note='$(DEMO_NOTE)'" || exit 1; \
	done

serve: $(STAMP) ## REST scoring of gym-churn-classifier@champion at http://127.0.0.1:5001/invocations
	PATH=$(call quote,$(CURDIR)/$(BIN)):"$$PATH" MLFLOW_TRACKING_URI=$(call quote,$(STORE)) \
		$(BIN)/mlflow models serve -m models:/gym-churn-classifier@champion --env-manager local \
		--host $(call quote,$(value HOST)) --port $(call quote,$(value SERVE_PORT))

dashboard: $(STAMP) ## optuna-dashboard on the studies' storage at http://127.0.0.1:8080: args="port=8090"
	@$(RUN) gymchurn.dashboard

# MLflow 3's server also starts a job runner with seven consumer processes for its GenAI jobs
# (about a core while it runs); gymchurn has no such jobs, so the UI runs without them.
ui: $(STAMP) ## MLflow UI on the project's store (or STORE=sqlite:///other.db) at http://127.0.0.1:5000
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --backend-store-uri $(call quote,$(STORE)) \
		--artifacts-destination $(call quote,$(CURDIR)/mlruns/artifacts) \
		--host $(call quote,$(value HOST)) --port $(call quote,$(value PORT))

test: $(STAMP) ## run the whole test suite (what CI runs), on two cores
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not slow"

bench: $(STAMP) ## tracking overhead, 1 vs 2 workers, training and scoring up to 1M rows -> experiments/benchmarks.md
	@$(RUN) --args-only benchmarks/bench.py

lint: $(STAMP) ## ruff (what CI runs besides the tests)
	$(BIN)/ruff check src tests benchmarks

clean-outputs: ## remove Hydra output folders (the MLflow store in mlruns/ is kept)
	rm -rf outputs
