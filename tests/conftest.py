"""Shared fixtures: small generated tables and a config whose every output is under tmp_path."""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

import pytest

from gymchurn.config import PROJECT_ROOT, compose_config
from gymchurn.data import make_synthetic_customers

REAL_DATA = (PROJECT_ROOT / ".." / "shared" / "data" / "gym_churn_us.csv").resolve()


@pytest.fixture(scope="session")
def customers():
    """600 synthetic customers with the real schema (see gymchurn.data.make_synthetic_customers)."""
    return make_synthetic_customers(600, seed=7)


@pytest.fixture(scope="session")
def churn_xy():
    """240 synthetic customers as (X, y) for tuning and CV tests."""
    df = make_synthetic_customers(240, seed=9)
    return df.drop(columns="Churn"), df["Churn"]


@pytest.fixture(scope="session")
def logreg():
    """A pipeline builder `params -> pipeline` (scaled logistic regression) for objectives."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return lambda params: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, **params))


@pytest.fixture
def customers_csv(tmp_path, customers) -> Path:
    path = tmp_path / "customers.csv"
    customers.to_csv(path, index=False)
    return path


@pytest.fixture
def store_overrides(tmp_path, customers_csv) -> list[str]:
    """Hydra overrides that keep data, MLflow store, Optuna storage and Hydra output in tmp_path."""
    return [
        f"data.path={customers_csv}",
        "data.shared_path=null",
        "data.url=null",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tune.storage=sqlite:///{tmp_path}/optuna.db",
        f"hydra.run.dir={tmp_path}/hydra",
    ]


@pytest.fixture
def small_cfg(store_overrides):
    """The churn config shrunk for tests: few trials and folds, no repeated CV."""
    overrides = [o for o in store_overrides if not o.startswith("hydra.")]
    return compose_config(overrides=[
        *overrides, "tune=fast", "tune.timeout=900", "tune.n_trials=2", "tune.folds=2",
        "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1",
    ])


# ---------------------------------------------------------------- new MLflow stores, fast
# MLflow makes a new SQLite store by creating its first tables and running every schema
# migration since (68 in MLflow 3.17): 1.5 s of CPU a store, 4-8 s on a busy machine, for each
# test with a store of its own. The result is the same every time, so it is made once per test
# process and copied: a copy is what the migrations would have written (the Default experiment,
# whose row depends on the working folder, is still added by MLflow when it opens the copy).


class MlflowSchema:
    """An SQLite file holding MLflow's tables at the installed version's schema and no rows,
    made by MLflow's own migrations on first use."""

    def __init__(self, folder: Path):
        self.path, self.made = folder / "mlflow-schema.db", False

    def file(self, initialize_tables) -> Path:
        if not self.made:
            import sqlalchemy

            engine = sqlalchemy.create_engine(f"sqlite:///{self.path}")
            try:
                initialize_tables(engine)
            finally:
                engine.dispose()
            self.made = True
        return self.path


@pytest.fixture(scope="session", autouse=True)
def mlflow_schema(tmp_path_factory):
    """New SQLite stores this process opens are filled with a copy of the schema (sqlite3's
    backup through MLflow's own connection) instead of the migrations; any other database is
    left to MLflow. Yields a function returning the schema file (see `new_mlflow_db`)."""
    import sqlite3

    from mlflow.store.db import utils
    from mlflow.store.model_registry import sqlalchemy_store as registry_store

    real = utils._initialize_tables
    schema = MlflowSchema(tmp_path_factory.getbasetemp())

    def initialize_tables(engine):
        if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
            return real(engine)
        raw = engine.raw_connection()
        try:
            with closing(sqlite3.connect(schema.file(real))) as source:
                source.backup(raw.driver_connection)
        finally:
            raw.close()
        return None

    # Both store classes call it (the registry's by its own imported name).
    patched = [m for m in (utils, registry_store) if getattr(m, "_initialize_tables", None) is real]
    for module in patched:
        module._initialize_tables = initialize_tables
    yield lambda: schema.file(real)
    for module in patched:
        module._initialize_tables = real


@pytest.fixture
def new_mlflow_db(tmp_path, mlflow_schema) -> Path:
    """tmp_path/mlflow.db as a new, empty MLflow store, for a command run in a child process
    (the patch above works in this process only)."""
    path = tmp_path / "mlflow.db"
    shutil.copy(mlflow_schema(), path)
    return path


@pytest.fixture(autouse=True)
def _isolate_mlflow(monkeypatch, tmp_path):
    """No test may write into the repo's mlruns/: default the tracking URI to tmp_path."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow-default.db")
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # setup_experiment sets it process-wide


# ---------------------------------------------------------------- the order tests are handed out


def pytest_collection_modifyitems(items):
    """Files holding slow tests first, each file's tests kept together and in order. `make test`
    hands whole files, in this order, to two pytest-xdist workers (--dist loadfile
    --no-loadscope-reorder): both start on the long end-to-end files and finish together on
    short ones, instead of one running a long file handed out last while the other idles; and a
    module-scoped fixture (a server, a report) is made once, not once in each worker."""
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_files)  # stable
