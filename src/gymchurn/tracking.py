"""Tracking stage: the MLflow store, experiments, parent runs and one nested run per trial.

Shared by every experiment type (churn, segmentation, report, promotion), so they all use one
store layout: `sqlite:///<root>/mlruns/mlflow.db` with artifacts in `<root>/mlruns/artifacts/`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from gymchurn.config import PROJECT_ROOT
from gymchurn.errors import GymchurnError

UI_PORT = 5000


def quiet_libraries() -> None:
    """Keep the terminal for our progress lines: database migrations and library chatter off."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A local CSV path matches two equivalent MLflow source classes; either is right.
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    # The logged dataset's schema has integer columns by design (validated, never NaN).
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
    for name in ("alembic", "mlflow", "optuna", "lightgbm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


@contextlib.contextmanager
def sqlite_init_lock(db: Path | None):
    """Hold an exclusive lock beside a SQLite file while its schema is created or migrated.

    Two processes that open a new store at once would otherwise both run the migrations
    (seen: "table _alembic_tmp_tags already exists"). No-op for other databases.
    """
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def default_artifact_root(uri: str) -> str | None:
    """`<folder of the SQLite file>/artifacts` for a local store; None lets a server decide."""
    db = sqlite_path(uri)
    return (db.parent / "artifacts").resolve().as_uri() if db else None


def setup_experiment(tracking_cfg: Mapping, experiment: str | None = None) -> str:
    """Point MLflow at the configured store and return the experiment's id (created if new)."""
    uri = str(tracking_cfg["uri"])
    db = sqlite_path(uri)
    if db is None and urlparse(uri).scheme not in ("http", "https", "postgresql", "mysql", "databricks"):
        raise GymchurnError(
            f"tracking.uri '{uri}' is not a tracking store MLflow can use here. Use "
            "sqlite:///path/mlflow.db or http://host:port of an MLflow server."
        )
    mlflow.set_tracking_uri(uri)
    name = experiment or tracking_cfg["experiment"]
    artifact_root = tracking_cfg.get("artifact_root") or default_artifact_root(uri)
    try:
        with sqlite_init_lock(db):  # the first calls create the tracking and registry tables
            client = MlflowClient()
            found = client.get_experiment_by_name(name)
            client.search_registered_models(max_results=1)
        if found is not None:
            return found.experiment_id
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as err:
        # Two processes may create the same experiment at once: the loser reads it back.
        found = MlflowClient().get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        raise GymchurnError(f"could not open MLflow store '{uri}': {err.message}") from err


def git_commit() -> str:
    """The commit the code ran at, with `-dirty` when there were uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def log_table_input(df, name: str, source: str, digest: str, target: str | None, context: str):
    """Record a table as the active run's dataset input, identified by its full-content digest."""
    dataset = mlflow.data.from_pandas(
        df, source=source, name=name, targets=target, digest=digest[:16]
    )
    mlflow.log_input(dataset, context=context)


class TrialRunLogger:
    """Optuna callback: one nested MLflow run per finished trial (params, scores, state).

    Uses the client API with an explicit parent id, so it also works from worker processes
    that have no active parent run of their own. What a trial logs is `trial_metrics` and
    `trial_tags`: the churn study's single CV score here; a subclass logs other studies'.
    """

    def __init__(self, experiment_id: str, parent_run_id: str, metric: str):
        self.client = MlflowClient()
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric

    def trial_metrics(self, trial: optuna.trial.FrozenTrial) -> dict[str, float | dict[int, float]]:
        """name -> value, or name -> {step: value} for a series."""
        metrics: dict = {}
        if trial.state == optuna.trial.TrialState.COMPLETE:  # a pruned trial's mean is partial
            metrics[f"cv_{self.metric}"] = trial.value
        if "cv_std" in trial.user_attrs:
            metrics[f"cv_{self.metric}_std"] = trial.user_attrs["cv_std"]
        metrics[f"cv_{self.metric}_running"] = dict(trial.intermediate_values)
        return metrics

    def trial_tags(self, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
        return {"error": trial.user_attrs["error"]} if "error" in trial.user_attrs else {}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        start_ms = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
        end_ms = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
        run = self.client.create_run(
            self.experiment_id,
            start_time=start_ms,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: f"trial-{trial.number:03d}",
                "optuna.study": study.study_name,
                "optuna.trial": str(trial.number),
                "optuna.state": trial.state.name,
            },
        )
        now = end_ms or int(time.time() * 1000)
        metrics = []
        for name, value in self.trial_metrics(trial).items():
            series = value if isinstance(value, dict) else {0: value}
            metrics += [Metric(name, float(v), now, step) for step, v in series.items()
                        if v is not None and math.isfinite(v)]
        self.client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag(k, str(v)) for k, v in self.trial_tags(trial).items()],
        )
        status = "FAILED" if trial.state == optuna.trial.TrialState.FAIL else "FINISHED"
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)


def ui_hint(experiment_id: str, run_id: str) -> list[str]:
    """How to open a run in the UI, for the end-of-run summary."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("http"):
        return [f"open:   {uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"]
    return [
        "open:   make ui   (MLflow UI on this store), then",
        f"        http://127.0.0.1:{UI_PORT}/#/experiments/{experiment_id}/runs/{run_id}",
    ]


def summary_footer(result: Mapping, registry_cfg: Mapping, experiment: str) -> list[str]:
    """Closing lines of every experiment's summary: registered version, run id, UI link."""
    rows = []
    if result["model_version"]:
        rows.append(f"registry   {registry_cfg['model_name']} version {result['model_version']}"
                    f"  alias @{registry_cfg['alias']}")
    rows.append(f"run        {result['run_id']}  (experiment '{experiment}')")
    return rows + ui_hint(result["experiment_id"], result["run_id"])
