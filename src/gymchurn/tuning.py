"""Tuning stage: Optuna searches a model family's space by cross-validation on the training split.

Optuna is called directly (not through hydra-optuna-sweeper, see DESIGN.md): TPE seeded,
pruning fold by fold, the study in an RDB storage URL so a rerun resumes it and several
workers can share it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sklearn.model_selection import StratifiedKFold
from sqlalchemy.exc import SQLAlchemyError

from gymchurn.errors import GymchurnError
from gymchurn.evaluation import tuning_metric
from gymchurn.tracking import sqlite_init_lock, sqlite_path

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_SECONDS = 10


def suggest_params(trial: optuna.Trial, space: Mapping) -> dict:
    """Sample one value per entry of a search space written in YAML (see conf/model/*.yaml)."""
    params = {}
    for name, spec in (space or {}).items():
        kind = spec.get("type")
        if kind == "int":
            params[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]),
                step=int(spec.get("step", 1)), log=bool(spec.get("log", False)),
            )
        elif kind == "float":
            params[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]),
                step=spec.get("step"), log=bool(spec.get("log", False)),
            )
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        else:
            raise GymchurnError(
                f"search space entry '{name}' has type '{kind}'; use int, float or categorical."
            )
    return params


def cv_folds(y, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified folds every trial, the threshold and the OOF metrics share."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def make_objective(
    X: pd.DataFrame,
    y: pd.Series,
    folds: Sequence,
    space: Mapping,
    metric: str,
    build: Callable[[dict], object],
) -> Callable[[optuna.Trial], float]:
    """Objective: mean CV score of the pipeline `build(params)`, reported (and pruned) per fold."""
    score, _ = tuning_metric(metric)

    def cross_validate(trial: optuna.Trial) -> float:
        params = suggest_params(trial, space)
        scores = []
        for step, (train_idx, valid_idx) in enumerate(folds):
            model = build(params)
            model.fit(X.iloc[train_idx], y.iloc[train_idx])
            proba = model.predict_proba(X.iloc[valid_idx])[:, 1]
            scores.append(float(score(y.iloc[valid_idx], proba)))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("cv_std", float(np.std(scores)))
        return float(np.mean(scores))

    return recording_failures(cross_validate)


def recording_failures(evaluate: Callable[[optuna.Trial], object]) -> Callable:
    """Wrap an objective so a failed trial keeps its reason and an interrupted one is marked.

    Optuna records both as failed but keeps no reason; the reason goes to the summary and
    MLflow, and an interrupted trial does not use up the budget (see finished_trials).
    """

    def objective(trial: optuna.Trial):
        try:
            return evaluate(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise

    return objective


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage (SQLite, PostgreSQL, ...) shared safely by several workers."""
    db = sqlite_path(url)
    # Several workers write to one SQLite file: wait for its lock instead of failing at once.
    engine_kwargs = {"connect_args": {"timeout": 60}} if db else {}
    with warnings.catch_warnings(), sqlite_init_lock(db):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Heartbeats let a rerun mark a killed worker's RUNNING trial as failed.
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
        )


def open_study(
    tune_cfg: Mapping, study_name: str, direction: str, worker: int = 0
) -> optuna.Study:
    """Create the study in its storage, or load it if it exists (that is how runs resume).

    Each worker seeds its sampler differently (seed + worker), so parallel workers explore
    different points; a single worker (0) is reproducible from the seed.
    """
    sampler = optuna.samplers.TPESampler(seed=int(tune_cfg["seed"]) + worker)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=int(tune_cfg["pruner"]["n_startup_trials"]),
        n_warmup_steps=int(tune_cfg["pruner"]["n_warmup_steps"]),
    )
    try:
        study = optuna.create_study(
            storage=open_storage(str(tune_cfg["storage"])), study_name=study_name,
            direction=direction,
            sampler=sampler, pruner=pruner, load_if_exists=True,
        )
    except (ValueError, ImportError, SQLAlchemyError) as err:
        raise GymchurnError(
            f"could not open the Optuna storage '{tune_cfg['storage']}': {err}. "
            "Set tune.storage= to a SQLAlchemy URL such as sqlite:///path/optuna.db."
        ) from err
    if study.direction.name.lower() != direction:
        raise GymchurnError(
            f"study '{study_name}' exists with direction {study.direction.name.lower()}, "
            f"but the metric needs {direction}. Set tune.study_name= to a new name."
        )
    return study


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards tune.n_trials: complete, pruned or failed, not interrupted."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if not t.user_attrs.get("interrupted")]


class ProgressPrinter:
    """Prints one line per trial: n of N, its value, the best so far, pruned/failed counts."""

    def __init__(self, n_total: int, metric: str, printer: Callable[[str], None] = print):
        self.n_total = n_total
        self.metric = metric
        self.printer = printer
        self.start = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trials = finished_trials(study)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        value = f"{trial.value:.5f}" if trial.value is not None else trial.state.name.lower()
        try:
            best = f"{study.best_value:.5f} (trial {study.best_trial.number})"
        except ValueError:
            best = "none yet"
        self.printer(
            f"  trial {len(trials):>3}/{self.n_total}  {self.metric}={value:<9}  best={best}  "
            f"pruned={pruned} failed={failed}  {time.monotonic() - self.start:5.1f}s"
        )


def run_trials(
    study: optuna.Study,
    objective: Callable,
    n_total: int,
    timeout: float | None,
    callbacks: Sequence[Callable] = (),
) -> int:
    """Run trials until the study holds `n_total` finished ones (or the timeout); return how
    many this call ran. A trial that raises is recorded as failed and the study goes on."""
    remaining = n_total - len(finished_trials(study))
    if remaining <= 0:
        return 0
    ran = []

    def count_this_call(study, trial):  # other workers' trials finish in the same study
        ran.append(trial.number)

    def stop_at_total(study, trial):  # other workers' trials count towards the same total
        if len(finished_trials(study)) >= n_total:
            study.stop()

    study.optimize(
        objective,
        n_trials=remaining,
        timeout=timeout,
        callbacks=[count_this_call, *callbacks, stop_at_total],
        catch=(Exception,),
        gc_after_trial=False,
    )
    return len(ran)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best complete trial, or a clear error built from the failures if there is none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        return study.best_trial
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    reason = failed[-1].user_attrs.get("error", "none recorded") if failed else "none"
    raise GymchurnError(
        f"no trial of study '{study.study_name}' completed ({len(failed)} failed). "
        f"Last failure: {reason}. "
        "Check the model's search space and estimator arguments."
    )
