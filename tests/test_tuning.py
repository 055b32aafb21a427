"""Tuning stage: resumable studies, failures, pruning, progress lines, nested MLflow trial runs."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from gymchurn.churn.evaluate import cv_folds, make_objective
from gymchurn.errors import GymchurnError
from gymchurn.tracking import setup_experiment
from gymchurn.trial_runs import TrialRunLogger
from gymchurn.tuning import (
    ProgressPrinter,
    best_trial,
    finished_trials,
    open_storage,
    open_study,
    recording_failures,
    run_trials,
    timeout_note,
)


@pytest.fixture(autouse=True, scope="module")
def _quiet_optuna():
    """Failed trials are expected here: keep Optuna's warnings about them out of the output."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture(scope="module")
def optuna_storage(tmp_path_factory):
    """One SQLite file for the module (creating its schema takes a second); every test uses
    its own study names in it."""
    return f"sqlite:///{tmp_path_factory.mktemp('optuna')}/optuna.db"


@pytest.fixture
def tune_cfg(optuna_storage):
    return {
        "seed": 0,
        "pruner": {"n_startup_trials": 100, "n_warmup_steps": 0},  # no pruning unless asked
        "storage": optuna_storage,
    }


def open_single(tune_cfg, name, direction):
    """A single-objective study in the configured storage: seeded TPE, median pruning."""
    return open_study(
        tune_cfg["storage"], name, [direction],
        sampler=lambda seed: optuna.samplers.TPESampler(seed=seed), seed=tune_cfg["seed"],
        pruner=optuna.pruners.MedianPruner(**tune_cfg["pruner"]),
    )


def quadratic(trial):
    x = trial.suggest_float("x", -2.0, 2.0)
    return -(x - 0.5) ** 2


def in_memory_study(direction="maximize", pruner=None):
    return optuna.create_study(direction=direction, pruner=pruner or optuna.pruners.NopPruner())


# ---------------------------------------------------------------- resumable studies


def test_run_trials_reaches_the_total_and_resumes(tune_cfg):
    study = open_single(tune_cfg, "resume", "maximize")
    assert run_trials(study, quadratic, n_total=4, timeout=None) == 4
    assert len(finished_trials(study)) == 4
    assert run_trials(study, quadratic, n_total=4, timeout=None) == 0
    assert len(study.trials) == 4
    assert run_trials(study, quadratic, n_total=6, timeout=None) == 2
    assert len(finished_trials(study)) == 6
    assert [t.number for t in study.trials] == list(range(6))


def test_reopened_study_keeps_its_trials(tune_cfg):
    study = open_single(tune_cfg, "kept", "maximize")
    run_trials(study, quadratic, n_total=3, timeout=None)
    again = open_single(tune_cfg, "kept", "maximize")
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    assert again.best_value == study.best_value
    # Resuming from the reopened study counts the stored trials.
    assert run_trials(again, quadratic, n_total=3, timeout=None) == 0
    other = open_single(tune_cfg, "another", "maximize")
    assert other.trials == []


def test_reopening_with_the_other_direction_is_a_user_error(tune_cfg):
    open_single(tune_cfg, "dir", "maximize")
    with pytest.raises(GymchurnError, match="direction maximize.*needs minimize.*study_name"):
        open_single(tune_cfg, "dir", "minimize")


def test_trials_of_other_workers_count_towards_the_total(tune_cfg):
    worker_a = open_single(tune_cfg, "shared", "maximize")
    worker_b = open_single(tune_cfg, "shared", "maximize")
    assert run_trials(worker_a, quadratic, n_total=3, timeout=None) == 3
    assert run_trials(worker_b, quadratic, n_total=5, timeout=None) == 2
    assert len(finished_trials(worker_a)) == 5


@pytest.mark.parametrize("storage", ["garbage", "notadb://x", "journal:///{tmp}"])
def test_bad_storage_url_is_a_user_error(tune_cfg, tmp_path, storage):
    tune_cfg["storage"] = storage.format(tmp=tmp_path)
    with pytest.raises(GymchurnError, match="tune.storage"):
        open_single(tune_cfg, "s", "maximize")


def test_run_trials_counts_the_enqueued_trials_it_ran(tune_cfg):
    study = open_single(tune_cfg, "queued", "maximize")
    study.enqueue_trial({"x": 0.5})
    study.enqueue_trial({"x": 1.0})
    ran = run_trials(study, quadratic, n_total=3, timeout=None)
    assert len(finished_trials(study)) == 3
    assert ran == 3


def test_a_resumed_study_does_not_replay_its_first_trials(tune_cfg):
    first = open_single(tune_cfg, "replay", "maximize")
    run_trials(first, quadratic, n_total=3, timeout=None)
    resumed = open_single(tune_cfg, "replay", "maximize")  # a rerun: new sampler, same seed
    run_trials(resumed, quadratic, n_total=6, timeout=None)
    xs = [t.params["x"] for t in resumed.trials]
    assert not set(xs[3:]) & set(xs[:3])
    # ...and resuming stays reproducible: the same history resumes the same way.
    twin = open_single(tune_cfg, "replay-twin", "maximize")
    run_trials(twin, quadratic, n_total=3, timeout=None)
    twin = open_single(tune_cfg, "replay-twin", "maximize")
    run_trials(twin, quadratic, n_total=6, timeout=None)
    assert [t.params["x"] for t in twin.trials] == xs


def test_a_trial_whose_process_died_is_not_charged_to_the_budget(tune_cfg):
    study = open_single(tune_cfg, "died", "maximize")
    run_trials(study, quadratic, n_total=2, timeout=None)
    # What Optuna's heartbeat check does to the running trial of a killed worker:
    # FAIL, with no reason recorded by the objective.
    study.tell(study.ask(), state=TrialState.FAIL)
    assert len(finished_trials(study)) == 2
    assert run_trials(study, quadratic, n_total=3, timeout=None) == 1


def test_a_dead_workers_trial_does_not_stop_the_others_short(tune_cfg):
    # Worker b's process dies while worker a tunes: its trial is FAIL without a reason (what
    # the heartbeat check does). Worker a still runs the study to its total of finished
    # trials; a stop rule counting every FAIL (MaxTrialsCallback) would stop it one short.
    worker_a = open_single(tune_cfg, "died-shared", "maximize")
    worker_b = open_single(tune_cfg, "died-shared", "maximize")

    def objective(trial):
        if trial.number == 0:
            worker_b.tell(worker_b.ask(), state=TrialState.FAIL)
        return quadratic(trial)

    assert run_trials(worker_a, objective, n_total=4, timeout=None) == 4
    assert len(finished_trials(worker_a)) == 4
    assert len(worker_a.trials) == 5


def test_reopening_a_study_fails_a_killed_workers_trial(tune_cfg):
    import sqlalchemy

    study = open_single(tune_cfg, "killed", "maximize")
    run_trials(study, quadratic, n_total=2, timeout=None)
    # A worker killed mid-trial: its trial RUNNING, its last heartbeat an hour old.
    dead = study.ask()
    open_storage(tune_cfg["storage"]).record_heartbeat(dead._trial_id)
    engine = sqlalchemy.create_engine(tune_cfg["storage"])
    with engine.begin() as db:
        db.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = "
                                   "datetime(heartbeat, '-1 hour') WHERE trial_id = :id"),
                   {"id": dead._trial_id})
    engine.dispose()
    assert study.trials[2].state == TrialState.RUNNING
    # A rerun with nothing left to run still marks it failed, and does not charge it.
    rerun = open_single(tune_cfg, "killed", "maximize")
    assert rerun.trials[2].state == TrialState.FAIL and "error" not in rerun.trials[2].user_attrs
    assert run_trials(rerun, quadratic, n_total=2, timeout=None) == 0
    assert len(finished_trials(rerun)) == 2


def test_an_objective_returning_nan_is_a_failure_with_a_reason(tune_cfg):
    def nan(trial):
        trial.suggest_float("x", 0, 1)
        return float("nan")

    study = open_single(tune_cfg, "nan", "maximize")
    assert run_trials(study, recording_failures(nan), n_total=2, timeout=None) == 2
    assert all("not a finite number" in t.user_attrs["error"] for t in study.trials)


def test_timeout_note_says_when_the_timeout_cut_the_study():
    study = in_memory_study()
    study.optimize(quadratic, n_trials=2)
    assert timeout_note(study, 10, 5.0) == "tune.timeout=5 s stopped tuning after 2 of 10 trials"
    assert timeout_note(study, 10, None) is None  # no timeout: the count alone decided
    assert timeout_note(study, 2, 5.0) is None    # the study reached its total


# ---------------------------------------------------------------- failures


def test_failing_trials_are_recorded_and_the_study_goes_on(tune_cfg, churn_xy, logreg):
    X, y = churn_xy
    space = {"C": {"type": "categorical", "choices": [1.0, -1.0]}}  # C must be > 0
    objective = make_objective(X, y, cv_folds(y, 2, 0), space, "roc_auc", logreg)
    study = open_single(tune_cfg, "failures", "maximize")
    for c in (1.0, -1.0, 1.0):
        study.enqueue_trial({"C": c})
    run_trials(study, objective, n_total=3, timeout=None)
    assert len(study.trials) == 3
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    failed = study.trials[1]
    assert "'C'" in failed.user_attrs["error"] and len(failed.user_attrs["error"]) <= 500
    assert "error" not in study.trials[0].user_attrs
    assert "cv_std" in study.trials[0].user_attrs
    assert best_trial(study).params == {"C": 1.0}


def test_best_trial_when_every_trial_failed_names_the_failure(tune_cfg, churn_xy, logreg):
    X, y = churn_xy
    space = {"C": {"type": "categorical", "choices": [-1.0]}}
    objective = make_objective(X, y, cv_folds(y, 2, 0), space, "roc_auc", logreg)
    study = open_single(tune_cfg, "all-failed", "maximize")
    run_trials(study, objective, n_total=2, timeout=None)
    assert all(t.state == TrialState.FAIL for t in study.trials)
    with pytest.raises(GymchurnError) as info:
        best_trial(study)
    message = str(info.value)
    assert "'all-failed'" in message and "(2 failed)" in message
    assert study.trials[-1].user_attrs["error"] in message
    assert "InvalidParameterError" in message and "'C'" in message


# ---------------------------------------------------------------- progress lines


def test_progress_printer_shows_count_value_and_best():
    values = iter([0.3, 0.7, 0.5])

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        return next(values)

    lines: list[str] = []
    study = in_memory_study()
    run_trials(study, objective, n_total=3, timeout=None,
               callbacks=[ProgressPrinter(3, ["roc_auc"], printer=lines.append)])
    assert len(lines) == 3
    for n, line in enumerate(lines, start=1):
        assert re.search(rf"trial\s+{n}/3\b", line), line
    assert "roc_auc=0.30000" in lines[0] and "best=0.30000 (trial 0)" in lines[0]
    assert "roc_auc=0.70000" in lines[1] and "best=0.70000 (trial 1)" in lines[1]
    assert "roc_auc=0.50000" in lines[2] and "best=0.70000 (trial 1)" in lines[2]


def test_progress_printer_counts_failures_before_any_success():
    lines: list[str] = []

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        if trial.number == 0:
            raise RuntimeError("first one breaks")
        return 0.5

    study = in_memory_study()
    run_trials(study, recording_failures(objective), n_total=2, timeout=None,
               callbacks=[ProgressPrinter(2, ["pr_auc"], printer=lines.append)])
    assert "best=none yet" in lines[0] and "failed=1" in lines[0]
    assert "pr_auc=fail" in lines[0]
    assert "best=0.50000 (trial 1)" in lines[1] and "failed=1" in lines[1]


# ---------------------------------------------------------------- nested MLflow runs


@pytest.fixture
def tracking(tmp_path):
    experiment_id = setup_experiment(
        {"uri": f"sqlite:///{tmp_path}/mlflow.db", "experiment": "t", "artifact_root": None}
    )
    yield experiment_id
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # do not leak this test's store into later tests


def test_trial_run_logger_creates_one_nested_run_per_trial(tracking, tmp_path, churn_xy, logreg):
    X, y = churn_xy
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/mlflow.db"
    space = {"C": {"type": "categorical", "choices": [1.0, 0.1, -1.0]}}
    objective = make_objective(X, y, cv_folds(y, 2, 0), space, "roc_auc", logreg)
    study = in_memory_study()
    for c in (1.0, 0.1, -1.0):
        study.enqueue_trial({"C": c})
    with mlflow.start_run(experiment_id=tracking) as parent:
        logger = TrialRunLogger(tracking, parent.info.run_id, "roc_auc")
        run_trials(study, objective, n_total=3, timeout=None, callbacks=[logger])

    client = MlflowClient()
    children = client.search_runs(
        [tracking], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 3
    by_name = {run.data.tags["mlflow.runName"]: run for run in children}
    assert set(by_name) == {"trial-000", "trial-001", "trial-002"}
    for trial in study.trials:
        run = by_name[f"trial-{trial.number:03d}"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.state"] == trial.state.name
        assert run.data.params == {"C": str(trial.params["C"])}
    for number in (0, 1):
        run, trial = by_name[f"trial-{number:03d}"], study.trials[number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["cv_roc_auc"] == pytest.approx(trial.value)
        assert run.data.metrics["cv_roc_auc_std"] == pytest.approx(trial.user_attrs["cv_std"])
    failed = by_name["trial-002"]
    assert failed.info.status == "FAILED"
    assert "cv_roc_auc" not in failed.data.metrics
    assert failed.data.tags["error"] == study.trials[2].user_attrs["error"]
    assert "'C'" in failed.data.tags["error"]
    # The parent run itself holds no trial params: only its children do.
    assert client.get_run(parent.info.run_id).data.params == {}


def test_a_journal_storage_is_created_and_resumed(tune_cfg, tmp_path):
    tune_cfg["storage"] = f"journal:///{tmp_path}/new/optuna.journal"
    study = open_single(tune_cfg, "journal", "maximize")
    assert isinstance(study._storage, optuna.storages.JournalStorage)
    assert run_trials(study, quadratic, n_total=3, timeout=None) == 3
    assert (tmp_path / "new" / "optuna.journal").stat().st_size > 0
    again = open_single(tune_cfg, "journal", "maximize")
    assert [t.params for t in again.trials] == [t.params for t in study.trials]
    assert run_trials(again, quadratic, n_total=5, timeout=None) == 2


JOURNAL_WORKER = """
import pathlib, sys, time, optuna
from gymchurn.tuning import open_study, run_trials
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage, seed, folder = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
study = open_study(storage, "shared", ["maximize"],
                   lambda s: optuna.samplers.TPESampler(seed=s), seed)
(folder / f"ready-{seed}").touch()  # both start together, so both write to the journal
deadline = time.monotonic() + 120
while len(list(folder.glob("ready-*"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
def objective(trial):
    x = trial.suggest_float("x", -2.0, 2.0)
    time.sleep(0.01)
    return -(x - 0.5) ** 2
print(run_trials(study, objective, n_total=30, timeout=None))
"""


def test_two_processes_share_a_journal_storage(tmp_path):
    storage = f"journal:///{tmp_path}/optuna.journal"
    workers = [subprocess.Popen([sys.executable, "-c", JOURNAL_WORKER, storage, str(seed),
                                 str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in (0, 1)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
    ran = [int(out.split()[-1]) for out, _ in outputs]
    trials = optuna.load_study(study_name="shared", storage=open_storage(storage)).trials
    assert 30 <= len(trials) <= 31  # the other worker may finish the trial it is running
    assert all(ran) and sum(ran) == len(trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_sqlite_storage_folder_is_created(tune_cfg, tmp_path):
    tune_cfg["storage"] = f"sqlite:///{tmp_path}/new/folder/optuna.db"
    study = open_single(tune_cfg, "fresh", "maximize")
    assert study.study_name == "fresh" and (tmp_path / "new" / "folder" / "optuna.db").exists()
