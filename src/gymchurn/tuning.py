"""Tuning stage: the study plumbing every road shares (churn: one objective; segments: several).

Optuna is called directly (not through hydra-optuna-sweeper, see DESIGN.md): seeded samplers,
the study in a storage (an RDB URL or a journal file) so a rerun resumes it and several
workers can share it, one progress line per trial, failed trials recorded with their reason,
interrupted ones not charged to the budget. What a road adds is its objective, sampler and pruner.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from gymchurn.errors import GymchurnError, interruption_point

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_SECONDS = 10
JOURNAL = "journal:///"  # tune.storage=journal:///<path>: Optuna's JournalStorage in that file


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


def recording_failures(evaluate: Callable[[optuna.Trial], object]) -> Callable:
    """Wrap an objective so a failed trial keeps its reason (Optuna keeps none): it goes to
    the summary and MLflow. A trial stopped by Ctrl-C gets none, so it does not use up the
    budget (see finished_trials)."""

    def objective(trial: optuna.Trial):
        try:
            value = evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        # Optuna fails a trial whose value is not a number, without a reason: give it one.
        values = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            trial.set_user_attr("error", f"the objective returned {value!r}, not a finite number")
        return value

    return objective


# ---------------------------------------------------------------- opening a study


def study_name(parts: Sequence, digest: str, searched: Mapping | None = None,
               given: str | None = None) -> str:
    """Same settings and same data -> same name, so rerunning a command resumes its study.

    `parts` are the settings spelled out in the name; `searched` (a search space, constraints,
    ...) enters as a short fingerprint; `given` (tune.study_name) wins when set.
    """
    if given:
        return str(given)
    name = "-".join(str(p) for p in parts)
    if searched is not None:
        fingerprint = hashlib.sha256(json.dumps(searched, sort_keys=True, default=str).encode())
        name += f"-{fingerprint.hexdigest()[:8]}"
    return f"{name}-{digest[:8]}"


def journal_path(url: str) -> Path | None:
    """The file of a `journal:///<path>` storage (the path after the third slash, as in
    sqlite:///), else None."""
    return Path(url[len(JOURNAL):]) if url.startswith(JOURNAL) else None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage shared safely by several workers: an RDB storage for a SQLAlchemy URL
    (SQLite, PostgreSQL, ...), a JournalStorage for journal:///<path>.

    The journal file spends far less time in the storage than SQLite on one machine, but has
    no heartbeats, so a killed worker's trial stays RUNNING (never charged to the budget), and
    a worker killed while writing makes the others wait 30 s for its lock; measured in
    experiments/optuna-storage.md.
    """
    from gymchurn.probe import check_driver, sql_connect_args
    from gymchurn.tracking import sqlite_init_lock, sqlite_path

    journal = journal_path(url)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(journal))
        return optuna.storages.JournalStorage(backend)
    check_driver(url)  # PostgreSQL's is an optional dependency: name the extra, not ImportError
    db = sqlite_path(url)
    # Several workers write to one SQLite file: wait for its lock instead of failing at once.
    # A database server that does not answer fails in seconds, not minutes.
    engine_kwargs = {"connect_args": {"timeout": 60} if db else sql_connect_args(url)}
    with warnings.catch_warnings(), sqlite_init_lock(db):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Heartbeats let a rerun mark a killed worker's RUNNING trial as failed.
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
        )


def fail_dead_trials(study: optuna.Study) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped sending heartbeats (killed).

    Optuna does this only before it starts a trial, so a rerun with nothing left to run would
    leave a killed worker's trial RUNNING for good (measured, experiments/optuna-storage.md).
    Such a trial has no reason, so it is not charged to the budget (finished_trials).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def resume_seed(seed: int, n_trials: int) -> int:
    """The sampler's seed for a study that already holds `n_trials` trials.

    A new study keeps `seed` (a rerun reproduces it); a resumed one gets a seed derived from
    `seed` and its trial count, so its sampler does not replay the first trials' parameters
    (seen: trials 5-9 of a resumed study repeated trials 0-4) and is still reproducible.
    """
    if n_trials == 0:
        return seed
    return int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])


def open_study(storage: str, name: str, directions: Sequence[str],
               sampler: Callable[[int], optuna.samplers.BaseSampler], seed: int,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study in its storage, or load it if it exists (that is how runs resume).

    One direction is a single-objective study, several a multi-objective one. `sampler(seed)`
    makes the sampler; a resumed study's is seeded with `resume_seed`.
    """
    from sqlalchemy.exc import SQLAlchemyError

    directions = list(directions)
    try:
        study = optuna.create_study(
            storage=open_storage(str(storage)), study_name=name, directions=directions,
            sampler=sampler(seed), pruner=pruner, load_if_exists=True,
        )
        n_trials = len(study.get_trials(deepcopy=False))
        if n_trials:
            study.sampler = sampler(resume_seed(seed, n_trials))
            fail_dead_trials(study)
    except (ValueError, ImportError, SQLAlchemyError, OSError) as err:
        from gymchurn.redact import mask_credentials

        raise GymchurnError(mask_credentials(
            f"could not open the Optuna storage '{storage}': {' '.join(str(err).split())}. "
            "Set tune.storage= to a SQLAlchemy URL such as sqlite:///path/optuna.db, or to "
            "journal:///path/optuna.journal."
        )) from err
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise GymchurnError(
            f"study '{name}' exists with direction {' '.join(found)}, but this run needs "
            f"{' '.join(directions)}. Set tune.study_name= to a new name."
        )
    return study


# ---------------------------------------------------------------- counting and reporting trials


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards tune.n_trials: complete, pruned, or failed with a reason.

    Not counted: a trial stopped by Ctrl-C/SIGTERM, nor one Optuna failed because its process
    died (SIGKILL, power loss: its heartbeat stopped). Neither has a reason.
    """
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED)
            if t.state != TrialState.FAIL or "error" in t.user_attrs]


def is_feasible(constraints: Mapping[str, float]) -> bool:
    """A trial meets its constraints when every value is <= 0 (Optuna's convention)."""
    return all(value <= 0 for value in constraints.values())


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Complete, pruned (single objective) or feasible (several objectives), and failed trials."""
    trials = finished_trials(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    counts = {"n_trials_complete": len(complete)}
    if is_multi_objective(study):
        counts["n_trials_feasible"] = sum(is_feasible(t.constraints) for t in complete)
    else:
        counts["n_trials_pruned"] = sum(t.state == TrialState.PRUNED for t in trials)
    counts["n_trials_failed"] = sum(t.state == TrialState.FAIL for t in trials)
    return counts


def pareto_front_size(study: optuna.Study) -> int:
    """Distinct parameter sets on the front (a repeated trial counts once)."""
    return len({tuple(sorted(t.params.items())) for t in study.best_trials})


class ProgressPrinter:
    """One line per trial: n of N, its value(s), the best so far (one objective) or the Pareto
    front's size (several), pruned/failed counts, and the time since the start.

    `names` are the objectives' names; `label_param` a parameter shown on every line (the
    segments' column subset)."""

    def __init__(self, n_total: int, names: Sequence[str], label_param: str | None = None,
                 printer: Callable[[str], None] = print):
        self.n_total = n_total
        self.names = list(names)
        self.label_param = label_param
        self.printer = printer
        self.start = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        counts = trial_counts(study)
        n = f"  trial {len(finished_trials(study)):>3}/{self.n_total}  "
        elapsed = f"{time.monotonic() - self.start:5.1f}s"
        if not is_multi_objective(study):
            value = f"{trial.value:.5f}" if trial.value is not None else trial.state.name.lower()
            try:
                best = f"{study.best_value:.5f} (trial {study.best_trial.number})"
            except ValueError:
                best = "none yet"
            self.printer(f"{n}{self.names[0]}={value:<9}  best={best}  "
                         f"pruned={counts['n_trials_pruned']} failed={counts['n_trials_failed']}  "
                         f"{elapsed}")
            return
        if trial.state == TrialState.COMPLETE:
            values = "  ".join(f"{n}={v:.4f}" for n, v in zip(self.names, trial.values, strict=True))
            state = "feasible" if is_feasible(trial.constraints) else "infeasible"
        else:
            values, state = trial.state.name.lower(), ""
        label = f"{trial.params.get(self.label_param, '?'):<18} " if self.label_param else ""
        self.printer(f"{n}{label}{values}  {state:<10}  front={pareto_front_size(study)} "
                     f"failed={counts['n_trials_failed']}  {elapsed}")


# ---------------------------------------------------------------- running trials


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

    # Other workers' trials count towards the same total. Not optuna.study.MaxTrialsCallback:
    # its `states` can only count FAIL trials all or none, and the budget charges a failure
    # only when it has a recorded reason (finished_trials). Counting FAIL, it would stop short
    # of the total by one trial per dead worker's or interrupted trial; not counting it, shared
    # workers would overshoot the total by the failures with a reason.
    def stop_at_total(study, trial):
        if len(finished_trials(study)) >= n_total:
            study.stop()

    def stop_if_interrupted(study, trial):  # between trials: nothing is half-written
        interruption_point()

    study.optimize(
        objective,
        n_trials=remaining,
        timeout=timeout,
        callbacks=[count_this_call, *callbacks, stop_at_total, stop_if_interrupted],
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


def last_failure(study: optuna.Study) -> str:
    """The reason the study's last failed trial recorded, as a sentence ('' if none)."""
    failed = [t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
    return f" Last failure: {failed[-1].user_attrs['error']}." if failed else ""


def resume_note(study: optuna.Study, n_total: int) -> str | None:
    """The line saying a rerun resumes a study, or None for a new one."""
    already = len(finished_trials(study))
    if not already:
        return None
    return f"resuming study '{study.study_name}': {already} of {n_total} trials already finished"


def timeout_note(study: optuna.Study, n_total: int, timeout: float | None) -> str | None:
    """The sentence saying tune.timeout cut the study short, or None when it did not."""
    done = len(finished_trials(study))
    if timeout is None or done >= n_total:
        return None
    return f"tune.timeout={timeout:g} s stopped tuning after {done} of {n_total} trials"


def interrupted_note(study: optuna.Study) -> str:
    """What an interrupted run kept: the study and its finished trials."""
    return (f"study '{study.study_name}' keeps {len(finished_trials(study))} finished trials. "
            "Rerun the same command to resume.")
