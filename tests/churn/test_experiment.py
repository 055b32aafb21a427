"""End to end: the Hydra entrypoint, a real temp MLflow store, real Optuna storage, small data."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gymchurn import experiment
from gymchurn.churn.leaderboard import LEADERBOARD_COLUMNS, leaderboard
from gymchurn.config import compose_config
from gymchurn.errors import GymchurnError

EXPECTED_METRICS = [
    f"{prefix}_{m}"
    for prefix in ("test", "cv")
    for m in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss", "brier")
] + ["threshold", "best_trial_cv_roc_auc", "n_trials_complete"]
EXPECTED_PLOTS = ["roc_curve", "pr_curve", "confusion_matrix", "calibration_curve",
                  "feature_importance", "optuna_history", "optuna_param_importances"]


def run_entrypoint(*overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gymchurn.experiment", *overrides],
        capture_output=True, text=True, timeout=timeout,
    )


def parent_and_children(client: MlflowClient, experiment_name: str):
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.slow
def test_entrypoint_tunes_tracks_and_registers(tmp_path, store_overrides, new_mlflow_db):
    overrides = [*store_overrides, "tune=fast", "tune.timeout=900", "tune.n_trials=2", "tune.folds=2",
                 "evaluation.repeated_cv_repeats=2", "evaluation.permutation_repeats=1"]
    done = run_entrypoint(*overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trial   2/2" in done.stdout and "best=" in done.stdout
    assert "gym-churn-classifier version 1" in done.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    parents, children = parent_and_children(client, "gym-churn")
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_id in done.stdout  # the summary names the run
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "lgbm-engineered"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all("cv_roc_auc" in c.data.metrics for c in children)
    assert all("learning_rate" in c.data.params for c in children)
    missing = [k for k in EXPECTED_METRICS if k not in parent.data.metrics]
    assert not missing, missing
    assert "rcv_roc_auc_mean" in parent.data.metrics and "rcv_roc_auc_std" in parent.data.metrics
    for tag in ("model_family", "feature_set", "tuned_metric", "data_digest", "git_commit"):
        assert parent.data.tags[tag]
    # The training split and the holdout, each as a dataset input with its context.
    inputs = {[t.value for t in d.tags if t.key == "mlflow.data.context"][0]: d.dataset
              for d in parent.inputs.dataset_inputs}
    assert set(inputs) == {"training", "eval"}
    rows = {c: json.loads(d.profile)["num_rows"] for c, d in inputs.items()}
    assert rows["training"] + rows["eval"] == len(pd.read_csv(tmp_path / "customers.csv"))
    assert rows["eval"] == round(0.2 * (rows["training"] + rows["eval"]))
    # Compare view: the parent's parameters use the trials' names; nothing internal.
    best = max((c for c in children if "cv_roc_auc" in c.data.metrics),
               key=lambda c: c.data.metrics["cv_roc_auc"])
    assert {k: parent.data.params[k] for k in best.data.params} == best.data.params
    assert not [k for k in parent.data.params if k.startswith("best_") or k in (
        "feature_columns", "skops_trusted_types", "data_schema", "threshold")]

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"config.yaml", "trials.csv", "holdout_predictions.csv"} <= artifacts
    assert {f"plots/{p}.png" for p in EXPECTED_PLOTS} <= plots
    assert str(tmp_path) in client.get_experiment(parent.info.experiment_id).artifact_location

    version = client.get_model_version_by_alias("gym-churn-classifier", "challenger")
    assert str(version.version) == "1"
    assert version.run_id == parent.info.run_id
    assert float(version.tags["test_roc_auc"]) == pytest.approx(parent.data.metrics["test_roc_auc"])
    assert float(version.tags["threshold"]) == pytest.approx(parent.data.metrics["threshold"])
    assert version.tags["data_digest"] == parent.data.tags["data_digest"]
    assert version.tags["split_seed"] == "42"

    # The registered model takes raw columns (extra ones ignored) and returns one probability.
    model = mlflow.pyfunc.load_model("models:/gym-churn-classifier@challenger")
    rows = pd.read_csv(tmp_path / "customers.csv").drop(columns=["Churn"]).head(20)
    rows["customer_id"] = np.arange(20)
    scores = model.predict(rows)  # the raw CSV table: integer columns stay integers, no cast
    assert list(scores.columns) == ["churn_probability"]
    assert scores["churn_probability"].between(0, 1).all() and len(scores) == 20
    # Every column is named in the signature and checked by the model with the data rules:
    # whole numbers in any numeric type are taken, a fractional age is refused (not cast).
    inputs = model.metadata.get_input_schema().inputs
    assert [c.name for c in inputs] == list(rows.columns[:-1])
    assert {type(c.type).__name__ for c in inputs} == {"AnyType"} and all(c.required for c in inputs)
    as_floats = model.predict(rows.astype({"Age": float, "Lifetime": float}))
    np.testing.assert_allclose(as_floats["churn_probability"], scores["churn_probability"])
    whole_spend = rows.assign(Avg_additional_charges_total=rows["Avg_additional_charges_total"].round())
    np.testing.assert_allclose(  # int64 in a float column: MLflow refused it when typed
        model.predict(whole_spend.astype({"Avg_additional_charges_total": "int64"}))["churn_probability"],
        model.predict(whole_spend)["churn_probability"])
    with pytest.raises(MlflowException, match=r"column 'Age': rule 'whole_number' fails in 1 row"):
        model.predict(rows.astype({"Age": float}).assign(Age=lambda d: d["Age"].mask(d.index == 3, 29.5)))

    # Same settings again: the study resumes (no new trials), a second version is registered.
    # (In this process: the command line was checked above; resuming is the same code.)
    lines = []
    experiment.run(compose_config(overrides=[o for o in overrides if not o.startswith("hydra.")]),
                   printer=lines.append)
    again = "\n".join(lines)
    assert "resuming study" in again and "2 of 2 trials already finished" in again
    parents, children = parent_and_children(client, "gym-churn")
    assert len(parents) == 2 and len(children) == 2
    assert str(client.get_model_version_by_alias("gym-churn-classifier", "challenger").version) == "2"


def test_bad_override_exits_with_hydra_message(store_overrides):
    done = run_entrypoint(*store_overrides, "model=nope")
    assert done.returncode != 0
    assert "model/nope" in done.stderr and "lgbm" in done.stderr


def test_bad_data_exits_cleanly_without_a_run(tmp_path, store_overrides, customers):
    bad = customers.copy()
    bad.loc[4, "Age"] = -3
    bad.to_csv(tmp_path / "customers.csv", index=False)
    done = run_entrypoint(*store_overrides)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "column 'Age'" in done.stderr and "rows 5" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # validation fails before tracking starts


def test_bad_config_value_names_the_key(store_overrides):
    done = run_entrypoint(*store_overrides, "split.test_size=1.5")
    assert done.returncode == 2 and "split.test_size" in done.stderr


def test_run_returns_plain_values_and_reports_a_timeout_cut(small_cfg):
    result = experiment.run(small_cfg)
    assert 0 < result["threshold"] < 1
    assert set(result["test_metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc",
                                           "pr_auc", "log_loss", "brier"}
    assert result["test_metrics"]["roc_auc"] > 0.8  # synthetic churn is learnable
    assert str(result["model_version"]) == "1"
    assert result["result"].timeout_note is None

    # The default budget is a trial count: the same command and seed give the same study on a
    # busy machine as on a quiet one. A timeout the user sets is reported when it cuts.
    assert compose_config().tune.timeout is None
    assert compose_config("segment").tune.timeout is None
    small_cfg.tune.n_trials, small_cfg.tune.timeout = 5, 1e-6  # resumes, then stops at once
    lines = []
    result = experiment.run(small_cfg, printer=lines.append)
    note = "tune.timeout=1e-06 s stopped tuning after 2 of 5 trials"
    assert result["result"].timeout_note == note and note in lines[-1]
    run = MlflowClient(small_cfg.tracking.uri).get_run(result["run_id"])
    assert run.data.tags["tuning_cut_short"] == note


def test_churn_study_direction_follows_the_tuned_metric(tmp_path):
    from omegaconf import OmegaConf

    from gymchurn.churn.fit import open_churn_study
    from gymchurn.errors import GymchurnError

    tune = OmegaConf.create({"storage": f"sqlite:///{tmp_path}/optuna.db", "metric": "roc_auc", "seed": 0,
                             "pruner": {"n_startup_trials": 1, "n_warmup_steps": 0}})
    study = open_churn_study(tune, "churn-study")
    assert [d.name for d in study.directions] == ["MAXIMIZE"]
    tune.metric = "log_loss"
    with pytest.raises(GymchurnError, match="direction maximize.*needs minimize.*study_name"):
        open_churn_study(tune, "churn-study")


def run_compare(tmp_path, store_overrides, *overrides: str) -> subprocess.CompletedProcess:
    """`make compare`: the experiment as a Hydra multirun, every output under tmp_path."""
    store = [o for o in store_overrides if not o.startswith("hydra.")]
    return run_entrypoint("--multirun", "experiment=compare", *store, *overrides,
                          f"hydra.sweep.dir={tmp_path}/sweep",
                          f"hydra.callbacks.leaderboard.output={tmp_path}/leaderboard.md",
                          timeout=900)


@pytest.mark.slow
def test_compare_writes_one_leaderboard_and_moves_challenger_to_the_cv_best(tmp_path, store_overrides,
                                                                        new_mlflow_db):
    done = run_compare(tmp_path, store_overrides, "model=logreg,lgbm", "features=raw", "tune=fast",
                       "tune.timeout=900", "tune.n_trials=2", "tune.folds=2",
                       "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1")
    assert done.returncode == 0, done.stderr[-3000:]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    parents, _ = parent_and_children(client, "gym-churn")
    digests = {p.data.tags["data_digest"] for p in parents}
    assert len(parents) == 2 and len(digests) == 1
    experiment_id = client.get_experiment_by_name("gym-churn").experiment_id
    table = leaderboard(experiment_id, digests.pop(), "roc_auc")
    assert sorted(table["family"]) == ["lgbm", "logreg"]
    assert list(table["cv_roc_auc"]) == sorted(table["cv_roc_auc"], reverse=True)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "generated by `make compare`" in text and "| logreg | raw |" in text
    assert "of 2 folds; test_* on the holdout of 0.2, split seed 42" in text
    assert list(table["trials"]) == ["2", "2"]
    # The file lists the same runs in the same (cv_roc_auc) order.
    assert re.findall(r"\b[0-9a-f]{32}\b", text) == list(table["run_id"])
    best_run = table.iloc[0]["run_id"]
    version = client.get_model_version_by_alias("gym-churn-classifier", "challenger")
    assert version.run_id == best_run


def test_compare_rejects_an_unknown_family(tmp_path, store_overrides):
    done = run_compare(tmp_path, store_overrides, "model=lgbm,nope")
    assert done.returncode != 0
    assert "nope" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before any job ran


def test_compare_replaces_only_a_previous_leaderboard(tmp_path):
    from gymchurn.churn.leaderboard import HEADER, LeaderboardWriter, check_leaderboard_file
    from gymchurn.errors import GymchurnError

    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    with pytest.raises(GymchurnError, match="notes.md.*leaderboard written by `make compare`"):
        LeaderboardWriter(str(notes)).on_multirun_start(config=None)  # before the sweep runs
    assert notes.read_text() == "# my notes\n"
    previous = tmp_path / "board.md"
    previous.write_text(f"{HEADER}\n## old\n")
    assert check_leaderboard_file(previous) == previous
    assert check_leaderboard_file(tmp_path / "new.md") == tmp_path / "new.md"


def test_a_changed_model_features_or_split_start_a_new_study_threads_do_not(customers):
    """Review: a rerun after fixing a misspelt `_target_` resumed the study whose trials had
    all failed under the old spelling, and test_size=0.3 resumed one tuned on the 0.2 split."""
    from gymchurn.churn.fit import plan

    def name(*overrides):
        cfg = compose_config(overrides=["model=lgbm", "tune=fast", *overrides])
        return plan(cfg, customers, {}).study_name

    base = name()
    assert name("n_jobs=1") == base and name("workers=2") == base  # threads change no score
    changed = [name("split.test_size=0.3"), name("model.estimator.learning_rate=0.1"),
               name("model.search_space.num_leaves.high=32"), name("features=raw")]
    assert base not in changed and len(set(changed)) == len(changed)
    assert name("tune.study_name=mine") == "mine"


@pytest.mark.parametrize("overrides, message", [
    (["model.estimator._target_=sklearn.linear_model.LogisticRegresion"],
     r"could not build estimator 'sklearn.linear_model.LogisticRegresion': .*LogisticRegresion"),
    (["model.estimator._target_=sklearn.svm.LinearSVC", "~model.estimator.max_iter"],
     r"model 'logreg' \(LinearSVC\) gives no churn probability .*predict_proba"),
])
def test_a_model_family_that_cannot_give_probabilities_is_refused_before_tuning(
        customers, overrides, message):
    """Review: a misspelt `_target_` or an estimator without predict_proba failed in every
    trial, each with its traceback."""
    from gymchurn.churn.fit import plan

    cfg = compose_config(overrides=["model=logreg", *overrides])
    with pytest.raises(GymchurnError, match=message) as info:
        plan(cfg, customers, {})
    assert "\n" not in str(info.value)


def test_the_leaderboard_leaves_out_runs_on_another_split(tmp_path):
    """Review: a run with test_size=0.3 (another holdout) was ranked beside the 0.2 ones."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = mlflow.create_experiment("lb")
    runs = {("lgbm", "0.2", "5"): 0.99, ("xgb", "0.2", "5"): 0.98, ("rf", "0.3", "5"): 0.995,
            ("logreg", "0.2", "3"): 0.97}
    for (family, test_size, folds), cv in runs.items():
        with mlflow.start_run(experiment_id=experiment_id):
            mlflow.set_tags({"run_type": "churn", "data_digest": "d1", "model_family": family,
                             "feature_set": "raw"})
            mlflow.log_params({"test_size": test_size, "split_seed": 42, "cv_folds": folds,
                               "n_trials": 40})
            mlflow.log_metrics({"cv_roc_auc": cv, "threshold": 0.5,
                                **{f"test_{m}": 0.9 for m in LEADERBOARD_COLUMNS}})
    split = {"test_size": "0.2", "split_seed": "42", "cv_folds": "5"}
    table = leaderboard(experiment_id, "d1", "roc_auc", split)
    assert list(table["family"]) == ["lgbm", "xgb"] and list(table["trials"]) == ["40", "40"]
    assert len(leaderboard(experiment_id, "d1", "roc_auc")) == 4  # no split given: all of them
