"""Interruptions, failing trials, parallel workers, concurrent experiments, reproducibility."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from gymchurn import experiment
from gymchurn.config import compose_config
from gymchurn.errors import install_interrupt_handlers
from gymchurn.tuning import finished_trials

from .test_experiment import parent_and_children


def client_for(tmp_path) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return MlflowClient()


def study_of(tmp_path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def wait_for_finished_trials(tmp_path, name: str, n: int, proc, timeout: float = 240) -> None:
    """Poll the Optuna storage until `n` trials of study `name` have finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(study_of(tmp_path, name).get_trials(states=(
                    optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))) >= n:
                return
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"study {name} did not reach {n} finished trials (exit {proc.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupted_run_is_killed_and_the_rerun_resumes(tmp_path, store_overrides, new_mlflow_db, sig):
    overrides = [*store_overrides, "tune=fast", "tune.timeout=900", "tune.n_trials=6", "tune.folds=3",
                 "tune.study_name=interrupted", "evaluation.repeated_cv_repeats=0",
                 "evaluation.permutation_repeats=1"]
    log = tmp_path / "stdout.txt"
    with open(log, "w") as out_file:
        proc = subprocess.Popen([sys.executable, "-m", "gymchurn.experiment", *overrides],
                                stdout=out_file, stderr=subprocess.PIPE, text=True)
        wait_for_finished_trials(tmp_path, "interrupted", 2, proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    out = log.read_text()
    assert proc.returncode == 130, err[-2000:]
    assert "marked KILLED" in out and "Rerun the same command to resume" in out

    client = client_for(tmp_path)
    parents, _ = parent_and_children(client, "gym-churn")
    assert [p.info.status for p in parents] == ["KILLED"]
    kept = [t for t in study_of(tmp_path, "interrupted").trials
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert 2 <= len(kept) < 6
    assert client.search_registered_models() == []  # nothing half-registered

    # The rerun, in this process (the command line's part, the signal, is checked above).
    lines = []
    experiment.run(compose_config(overrides=[o for o in overrides if not o.startswith("hydra.")]),
                   printer=lines.append)
    assert f"resuming study 'interrupted': {len(kept)}" in "\n".join(lines)
    parents, _ = parent_and_children(client, "gym-churn")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
    finished = study_of(tmp_path, "interrupted").get_trials(
        states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                optuna.trial.TrialState.FAIL))
    assert len(finished) >= 6


@pytest.mark.slow
def test_sigterm_while_extra_workers_start_stops_them_cleanly(small_cfg, monkeypatch):
    """The signal lands inside Process.start() of the second worker (the reported traceback:
    the interrupt cut start() in half and the cleanup then failed on the unstarted process)."""
    import multiprocessing.process

    from gymchurn.churn import fit
    from gymchurn.data import load_customers

    small_cfg.workers, small_cfg.tune.n_trials = 3, 50
    customers, provenance = load_customers(small_cfg.data)
    plan = fit.plan(small_cfg, customers, provenance)
    started = []
    real_start = multiprocessing.process.BaseProcess.start

    def start_with_a_signal(process):
        if not started:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs here: inside start()
        real_start(process)
        started.append(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_with_a_signal)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install_interrupt_handlers()
    try:
        with pytest.raises(KeyboardInterrupt):
            fit.tune(plan, study=fit.open_churn_study(small_cfg.tune, plan.study_name))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert len(started) == 2  # both extra workers were started, then stopped
    assert all(p.exitcode is not None for p in started)
    assert finished_trials(study_of_cfg(small_cfg, plan.study_name)) == []


def study_of_cfg(cfg, name):
    return optuna.load_study(study_name=name, storage=cfg.tune.storage)


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, small_cfg):
    cfg = compose_config(overrides=[
        f"data.path={small_cfg.data.path}", f"tracking.uri={small_cfg.tracking.uri}",
        f"tune.storage={small_cfg.tune.storage}", "model=logreg", "tune=fast", "tune.timeout=900",
        "tune.n_trials=8", "tune.folds=2", "evaluation.repeated_cv_repeats=0",
        "evaluation.permutation_repeats=1", "tune.study_name=with-failures",
        # an invalid value for LogisticRegression: trials that draw it raise in fit
        "+model.search_space.penalty={type:categorical,choices:[l2,not-a-penalty]}",
    ])
    result = experiment.run(cfg)
    trials = study_of(tmp_path, "with-failures").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert failed and complete and len(trials) == 8
    assert all("not-a-penalty" in t.user_attrs["error"] for t in failed)
    assert result["metrics"]["n_trials_failed"] == len(failed)

    client = client_for(tmp_path)
    _, children = parent_and_children(client, "gym-churn")
    failed_runs = [c for c in children if c.info.status == "FAILED"]
    assert len(failed_runs) == len(failed)
    assert all("not-a-penalty" in r.data.tags["error"] for r in failed_runs)


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(tmp_path, small_cfg, capfd):
    # Enough trials that the spawned worker (seconds of imports before its first trial) joins
    # while worker 0 is still tuning, on an idle machine and a loaded one. Worker 0 is this
    # process; both print their progress to file descriptor 1.
    n = 24
    small_cfg.workers, small_cfg.tune.n_trials, small_cfg.tune.folds = 2, n, 3
    small_cfg.tune.study_name = "shared"
    experiment.run(small_cfg)
    out = capfd.readouterr().out
    assert "[worker 0]" in out and "[worker 1]" in out
    trials = study_of(tmp_path, "shared").trials
    assert n <= len(trials) <= n + 1  # the other worker may finish the trial it is running
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)

    client = client_for(tmp_path)
    parents, children = parent_and_children(client, "gym-churn")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    numbers = sorted(int(c.data.tags["optuna.trial"]) for c in children)
    assert numbers == sorted(t.number for t in trials)  # each trial once as a nested run
    assert len(client.search_model_versions("name='gym-churn-classifier'")) == 1


@pytest.mark.slow
def test_two_experiments_at_once_on_one_sqlite_store(tmp_path, store_overrides):
    common = [*store_overrides, "n_jobs=1", "tune=fast", "tune.timeout=900", "tune.n_trials=4",
              "tune.folds=2",
              "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "gymchurn.experiment", *common, f"model={m}",
                          f"hydra.run.dir={tmp_path}/hydra-{m}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for m in ("logreg", "lgbm")
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    client = client_for(tmp_path)
    parents, children = parent_and_children(client, "gym-churn")
    assert sorted(p.data.tags["model_family"] for p in parents) == ["lgbm", "logreg"]
    assert all(p.info.status == "FINISHED" for p in parents)
    assert len(children) == 8
    assert len(client.search_model_versions("name='gym-churn-classifier'")) == 2


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_result(tmp_path, customers_csv):
    results = []
    for name in ("first", "second"):
        store = tmp_path / name
        cfg = compose_config(overrides=[
            f"data.path={customers_csv}", f"tracking.uri=sqlite:///{store}/mlflow.db",
            f"tune.storage=sqlite:///{store}/optuna.db", "tune=fast", "tune.timeout=900", "tune.n_trials=5",
            "tune.folds=3", "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1",
        ])
        results.append(experiment.run(cfg))
    first, second = results
    assert first["best_params"] == second["best_params"]
    assert first["test_metrics"] == pytest.approx(second["test_metrics"], rel=1e-9)
    assert first["threshold"] == pytest.approx(second["threshold"], rel=1e-12)
