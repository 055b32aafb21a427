"""Shared fixtures: small generated tables and a config whose every output is under tmp_path."""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _isolate_mlflow(monkeypatch, tmp_path):
    """No test may write into the repo's mlruns/: default the tracking URI to tmp_path."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow-default.db")
    yield
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)  # setup_experiment sets it process-wide
