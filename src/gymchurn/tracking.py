"""Tracking stage: the MLflow store, and the one recorder that logs any road's result.

Every road (churn, segments, promotion, report) returns a plain result; its `record()` says
what to log as a `RunRecord` (params, metrics, tags, texts, tables, figures, folders, dataset
input, model, registry version). `tracked_run` opens the run; `record` logs a RunRecord into
it; `gymchurn.trial_runs` gives tuning workers one nested run per trial. Nothing else in the
package calls MLflow's logging API. Every run carries what identifies its process, so a later
command can close the runs of a process that was killed (`gymchurn.stale_runs`).

One store layout for all: `sqlite:///<root>/mlruns/mlflow.db` with artifacts in
`<root>/mlruns/artifacts/<experiment>/`. MLflow is imported inside the functions, so commands
that never log do not pay for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gymchurn.config import PROJECT_ROOT
from gymchurn.errors import GymchurnError
from gymchurn.redact import mask_credentials, mask_value
from gymchurn.stale_runs import close_dead_runs, process_tags

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
    with contextlib.suppress(ImportError):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------- the store


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
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from gymchurn.probe import check_reachable

    quiet_libraries()  # importing mlflow resets its loggers to INFO
    uri = str(tracking_cfg["uri"])
    db = sqlite_path(uri)
    # A database URI may name its driver (postgresql+psycopg://): MLflow takes either form.
    scheme = urlparse(uri).scheme.split("+")[0]
    if db is None and scheme not in ("http", "https", "postgresql", "mysql", "databricks"):
        raise GymchurnError(
            f"tracking.uri '{mask_credentials(uri)}' is not a tracking store MLflow can use here. "
            "Use sqlite:///path/mlflow.db or http://host:port of an MLflow server."
        )
    # MLflow would retry an absent server for minutes: fail in seconds instead.
    check_reachable(uri, "MLflow tracking server or database",
                    "Start it, or point tracking.uri= (or MLFLOW_TRACKING_URI) at one that runs; "
                    "with neither set, the local store mlruns/mlflow.db is used.")
    mlflow.set_tracking_uri(uri)
    name = experiment or tracking_cfg["experiment"]
    artifact_root = tracking_cfg.get("artifact_root") or default_artifact_root(uri)
    try:
        with sqlite_init_lock(db):  # the first calls create the tracking and registry tables
            # Checked under the lock: another process creating a new store holds it, and its
            # half-made file would read as "not an MLflow store" (seen with two experiments
            # started at once on a new store).
            if db is not None and db.is_file() and db.stat().st_size:  # new or empty: created
                from gymchurn.registry import check_sqlite_store

                check_sqlite_store(db, writable=True)  # damaged or read-only: one line
            client = MlflowClient()
            found = client.get_experiment_by_name(name)
            client.search_registered_models(max_results=1)
        if found is not None:
            return found.experiment_id
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as err:
        # Two processes may create the same experiment at once: the loser reads it back. (A
        # store that refused the first call, a login for one, refuses this one too.)
        with contextlib.suppress(MlflowException):
            found = MlflowClient().get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
        login = " Check the user and password in tracking.uri (or MLFLOW_TRACKING_USERNAME and " \
            "MLFLOW_TRACKING_PASSWORD)." if err.error_code in ("UNAUTHENTICATED",
                                                               "PERMISSION_DENIED") else ""
        raise GymchurnError(f"could not open MLflow store '{mask_credentials(uri)}': "
                            f"{mask_credentials(err.message)}{login}") from err


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


# ---------------------------------------------------------------- what a road asks to log


@dataclass
class DatasetInput:
    """A table logged as the run's dataset input, identified by its full-content digest
    (MLflow's own digest reads only the first 10,000 rows)."""

    frame: Any
    name: str
    source: str
    digest: str
    target: str | None
    context: str


@dataclass
class ModelSpec:
    """A fitted pipeline to log as a pyfunc model defined by the file `code` (models from code)."""

    pipeline: Any
    code: Path
    input_example: Any
    output_example: Any
    model_config: dict


@dataclass
class Registration:
    """Register the logged model as a new version of `model_name` with these tags and alias
    (the recorder adds the run id)."""

    model_name: str
    tags: dict
    alias: str | None


@dataclass
class RunRecord:
    """Everything one road asks to log into a run. Artifact names are paths in the run:
    tables ending in .json go through `mlflow.log_table`, others are written as CSV (no index);
    `folders` are local folders logged under their artifact path."""

    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    folders: dict = field(default_factory=dict)
    datasets: list[DatasetInput] = field(default_factory=list)  # training, eval, ...
    model: ModelSpec | None = None
    registration: Registration | None = None
    model_id: str | None = None  # metrics also linked to this logged model (a version's model_id)


@dataclass
class Logged:
    """What `record` produced, and the wall time it spent per kind of call."""

    model_uri: str | None = None
    version: str | None = None
    seconds: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """The run `tracked_run` opened (its ids) and the time the recorder spent in MLflow."""

    experiment_id: str
    run_id: str
    experiment: str
    seconds: dict = field(default_factory=dict)

    def add(self, timings: Mapping[str, float]) -> None:
        for key, value in timings.items():
            self.seconds[key] = self.seconds.get(key, 0.0) + value


@contextlib.contextmanager
def tracked_run(tracking_cfg: Mapping, run_name: str, tags: Mapping,
                experiment: str | None = None,
                on_interrupt: Callable[[], str] | None = None,
                printer: Callable[[str], None] = print) -> Iterator[RunContext]:
    """Open a run in the configured store; mark it KILLED on Ctrl-C / SIGTERM, saying what
    `on_interrupt()` reports was kept, then let the interrupt end the command."""
    import mlflow

    start = time.perf_counter()
    name = experiment or tracking_cfg["experiment"]
    experiment_id = setup_experiment(tracking_cfg, name)
    tags = {**tags, "git_commit": git_commit(), **process_tags()}
    for note in close_dead_runs(experiment_id):
        printer(note)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                           tags={k: mask_credentials(str(v)) for k, v in tags.items()})
    context = RunContext(experiment_id, run.info.run_id, name)
    context.add({"store and run": time.perf_counter() - start})
    try:
        yield context
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        kept = f" {on_interrupt()}" if on_interrupt else ""
        printer(f"\ninterrupted: MLflow run {context.run_id} marked KILLED;{kept}")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    start = time.perf_counter()
    mlflow.end_run()
    context.add({"store and run": time.perf_counter() - start})


def record(result: RunRecord, context: RunContext | None = None) -> Logged:
    """Log `result` into the active run; return the model URI, registry version and timings.

    No interruption point in here: Ctrl-C waits until everything is logged, so a model is never
    registered without its alias, a run never half-recorded (see errors.py)."""
    import mlflow

    logged = Logged()
    clock = time.perf_counter

    def timed(group: str, start: float) -> None:
        logged.seconds[group] = logged.seconds.get(group, 0.0) + clock() - start

    start = clock()
    # Params, tags, texts (the resolved config.yaml) and sources may hold a store URI: its
    # credentials are masked before anything is stored.
    if result.params:
        mlflow.log_params({k: mask_value(v) for k, v in result.params.items()})
    if result.metrics:
        mlflow.log_metrics({k: float(v) for k, v in result.metrics.items()}, model_id=result.model_id)
    if result.tags:
        mlflow.set_tags({k: mask_credentials(str(v)) for k, v in result.tags.items()})
    for path, text in result.texts.items():
        mlflow.log_text(mask_credentials(text), path)
    for d in result.datasets:
        dataset = mlflow.data.from_pandas(d.frame, source=mask_credentials(str(d.source)),
                                          name=d.name, targets=d.target, digest=d.digest[:16])
        mlflow.log_input(dataset, context=d.context)
    with tempfile.TemporaryDirectory() as tmp:
        for path, table in result.tables.items():
            if path.endswith(".json"):
                mlflow.log_table(table, path)
                continue
            local = Path(tmp) / Path(path).name
            table.to_csv(local, index=False)
            folder = str(Path(path).parent)
            mlflow.log_artifact(str(local), None if folder == "." else folder)
    for path, local in result.folders.items():
        mlflow.log_artifacts(str(local), path)
    timed("params, metrics, tables, dataset", start)

    start = clock()
    if result.figures:
        import matplotlib.pyplot as plt

        for path, figure in result.figures.items():
            mlflow.log_figure(figure, path)
            plt.close(figure)  # logged: pyplot need not keep it open
    timed("plots", start)

    if result.model is not None:
        start = clock()  # importing the registry (skops, all of scikit-learn) is part of it
        from gymchurn.registry import log_pipeline_model, register_version

        m = result.model
        info = log_pipeline_model(m.pipeline, m.code, m.input_example, m.output_example,
                                  m.model_config)
        logged.model_uri = info.model_uri
        timed("model (skops, signature, environment)", start)
        if result.registration is not None:
            start = clock()
            r = result.registration
            tags = {**r.tags, "run_id": mlflow.active_run().info.run_id}
            logged.version = register_version(info.model_uri, r.model_name, tags, r.alias).version
            timed("registry version + alias", start)
    if context is not None:
        context.add(logged.seconds)
    return logged


# ---------------------------------------------------------------- summaries


def ui_hint(experiment_id: str, run_id: str) -> list[str]:
    """How to open a run in the UI, for the end-of-run summary."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("http"):
        # Without its user info: the browser asks for the password rather than show it.
        scheme, _, rest = uri.partition("://")
        host, slash, path = rest.partition("/")
        link = mask_credentials(f"{scheme}://{host.rpartition('@')[2]}{slash}{path}")
        return [f"open:   {link.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"]
    # `make ui` serves the project's store; another store (the demo's, a test's) is named.
    db = sqlite_path(uri)
    if db is not None and db.resolve() == (PROJECT_ROOT / "mlruns" / "mlflow.db").resolve():
        command = "make ui"
    elif db is not None:  # make runs from the project root: the file's absolute path
        command = f"make ui {shlex.quote(f'STORE=sqlite:///{db.resolve()}')}"
    else:
        masked = mask_credentials(uri)
        command = f"make ui {shlex.quote('STORE=' + masked)}"
        if masked != uri:
            command += "   (your password in place of ***)"
    return [
        f"open:   {command}   (MLflow UI on this store), then",
        f"        http://127.0.0.1:{UI_PORT}/#/experiments/{experiment_id}/runs/{run_id}",
    ]


def summary_footer(context: RunContext, version: str | None, registry_cfg: Mapping) -> list[str]:
    """Closing lines of every experiment's summary: registered version, run id, UI link."""
    rows = []
    if version:
        rows.append(f"registry   {registry_cfg['model_name']} version {version}"
                    f"  alias @{registry_cfg['alias']}")
    rows.append(f"run        {context.run_id}  (experiment '{context.experiment}')")
    return rows + ui_hint(context.experiment_id, context.run_id)
