"""Registry stage: pipelines are saved with skops, trusting only the pipeline's own types."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from skops.io.exceptions import UntrustedTypesFoundException

from gymchurn.config import compose_config
from gymchurn.data import feature_columns
from gymchurn.errors import GymchurnError
from gymchurn.pipeline import build_pipeline
from gymchurn.registry import load_pipeline, pip_requirements, save_pipeline


def fitted(model: str, customers, features: str = "engineered"):
    cfg = compose_config(overrides=[f"model={model}", f"features={features}", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    params = {"n_estimators": 60} if "n_estimators" in cfg.model.estimator else {}
    pipe = build_pipeline(cfg.features, cfg.model, columns, params)
    return pipe.fit(customers[columns], customers[cfg.data.target]), customers[columns]


@pytest.mark.parametrize("model", ["lgbm", "xgb"])
def test_save_and_load_give_identical_probabilities(model, customers, tmp_path):
    pipe, X = fitted(model, customers)
    path = tmp_path / "pipeline.skops"
    trusted = save_pipeline(pipe, path)
    assert path.stat().st_size > 0
    library = {"lgbm": "lightgbm.", "xgb": "xgboost."}[model]
    assert any(t.startswith(library) for t in trusted), trusted
    assert "gymchurn.features.BehaviourChangeFeatures" in trusted
    assert trusted == sorted(trusted)
    loaded = load_pipeline(path, trusted)
    assert loaded is not pipe
    expected = pipe.predict_proba(X)
    assert np.unique(expected[:, 1]).size > 1
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_loading_trusts_only_the_recorded_types(customers, tmp_path):
    pipe, _ = fitted("lgbm", customers)
    path = tmp_path / "pipeline.skops"
    trusted = save_pipeline(pipe, path)
    with pytest.raises(UntrustedTypesFoundException):
        load_pipeline(path, [t for t in trusted if not t.startswith("lightgbm.")])


def test_lambda_in_a_pipeline_is_refused(customers, tmp_path):
    X, y = customers.drop(columns="Churn").iloc[:100], customers["Churn"].iloc[:100]
    pipe = make_pipeline(FunctionTransformer(lambda x: x), StandardScaler(), LogisticRegression())
    pipe.fit(X, y)
    with pytest.raises(GymchurnError) as info:
        save_pipeline(pipe, tmp_path / "unsafe.skops")
    message = str(info.value)
    assert "lambda" in message
    assert "<lambda>" in message  # the refused type is named


def test_pipeline_of_trusted_sklearn_types_needs_no_extra_trust(customers, tmp_path):
    pipe, X = fitted("logreg", customers, features="raw")
    path = tmp_path / "logreg.skops"
    assert save_pipeline(pipe, path) == []
    np.testing.assert_array_equal(load_pipeline(path, []).predict_proba(X), pipe.predict_proba(X))


def requirement_names(requirements: list[str]) -> dict[str, str]:
    pairs = [r.split("==") for r in requirements]
    assert all(len(p) == 2 and p[1] for p in pairs), requirements
    return dict(pairs)


def test_pip_requirements_of_an_lgbm_pipeline(customers):
    pipe, _ = fitted("lgbm", customers)
    pinned = requirement_names(pip_requirements(pipe))
    assert {"scikit-learn", "lightgbm", "mlflow", "skops", "pandas", "numpy"} <= set(pinned)
    assert "xgboost" not in pinned
    assert pinned["scikit-learn"] == metadata.version("scikit-learn")
    assert pinned["lightgbm"] == metadata.version("lightgbm")


def test_pip_requirements_of_an_xgb_pipeline(customers):
    import xgboost

    pipe, _ = fitted("xgb", customers, features="raw")
    pinned = requirement_names(pip_requirements(pipe))
    # The distribution actually installed: xgboost-cpu here, so a serving env gets no CUDA.
    installed = metadata.packages_distributions()["xgboost"][0]
    assert pinned[installed] == xgboost.__version__
    assert "lightgbm" not in pinned


# ---------------------------------------------------------------- opening a store for reading


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """An MLflow SQLite store holding only MLflow's tables, made once."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates every table
    return path


def damaged_copy(kind: str, source, folder):
    """A copy of an MLflow store as a careless user may leave it."""
    import shutil
    import sqlite3

    path = folder / "mlflow.db"
    if kind == "empty":
        path.touch()
    elif kind == "truncated":  # a copy or a disk that stopped half-way
        shutil.copy(source, path)
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif kind == "overwritten":
        path.write_bytes(b"this is not a database\n" * 5000)
    elif kind == "another database":
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE customers (id INTEGER)")
    return path


STORE_DAMAGE = [("empty", "is empty, not an MLflow database"),
                ("truncated", "is damaged or not a database (database disk image is malformed)"),
                ("overwritten", "is damaged or not a database (file is not a database)"),
                ("another database", "is an SQLite database but not an MLflow store")]


@pytest.mark.parametrize(("kind", "message"), STORE_DAMAGE, ids=[k for k, _ in STORE_DAMAGE])
def test_a_damaged_store_is_refused_with_the_fix_and_left_as_it_was(kind, message, mlflow_store,
                                                                    tmp_path):
    from gymchurn.registry import open_registry

    path = damaged_copy(kind, mlflow_store, tmp_path)
    before = path.read_bytes()
    with pytest.raises(GymchurnError) as info:
        open_registry({"uri": f"sqlite:///{path}"})
    assert message in str(info.value) and str(path) in str(info.value)
    assert "Restore mlflow.db from a backup" in str(info.value)
    assert path.read_bytes() == before  # MLflow never created its tables in it


def test_an_intact_store_opens(mlflow_store):
    import mlflow

    from gymchurn.registry import open_registry

    open_registry({"uri": f"sqlite:///{mlflow_store}"}, writable=True)
    assert mlflow.get_tracking_uri() == f"sqlite:///{mlflow_store}"


# ---------------------------------------------------------------- the served model's data rules


def test_a_logged_model_carries_the_data_rules_it_was_trained_under(customers, tmp_path):
    import mlflow

    from gymchurn.churn import served
    from gymchurn.registry import log_pipeline_model
    from gymchurn.serving import data_schema

    cfg = compose_config(overrides=["features=raw", "data.columns.Age.max=60"])
    pipe, X = fitted("logreg", customers, features="raw")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        example = X.head(5).astype("float64")
        output = pd.DataFrame({"churn_probability": pipe.predict_proba(example)[:, 1]})
        info = log_pipeline_model(pipe, Path(served.__file__), example, output,
                                  {"threshold": 0.5, "data_schema": data_schema(cfg.data)})
    model = mlflow.pyfunc.load_model(info.model_uri)
    rules = model.unwrap_python_model().data_schema
    assert rules == data_schema(cfg.data) and rules["columns"]["Age"]["max"] == 60
    assert rules["order"] == list(cfg.data.columns)
    ok = X.astype("float64").head(20)
    np.testing.assert_allclose(model.predict(ok)["churn_probability"], pipe.predict_proba(ok)[:, 1])
    too_old = ok.assign(Age=70.0)  # allowed by conf/data/gym.yaml, not by this model's run
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"column 'Age'.*between 14 and 60"):
        model.predict(too_old)


# churn/served.py as versions registered before the data rules were logged with it (a version
# runs the copy of the file logged with it): what it imports must stay importable.
OLD_WRAPPER = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from gymchurn.churn import PROBABILITY_COLUMN
from gymchurn.registry import load_pipeline


class ChurnProbabilityModel(PythonModel):
    def load_context(self, context):
        self.pipeline = load_pipeline(
            context.artifacts["pipeline"], context.model_config["skops_trusted_types"]
        )
        self.threshold = float(context.model_config["threshold"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        proba = self.pipeline.predict_proba(model_input)[:, 1]
        return pd.DataFrame({PROBABILITY_COLUMN: proba}, index=model_input.index)


mlflow.models.set_model(ChurnProbabilityModel())
"""


def test_a_version_logged_with_the_old_wrapper_still_loads_and_scores(customers, tmp_path):
    import mlflow
    from mlflow.models import infer_signature

    from gymchurn.registry import load_fitted_pipeline, pip_requirements, save_pipeline

    (tmp_path / "served.py").write_text(OLD_WRAPPER)
    pipe, X = fitted("logreg", customers, features="raw")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    example = X.head(5).astype("float64")
    output = pd.DataFrame({"churn_probability": pipe.predict_proba(example)[:, 1]})
    # Logged as such versions were: settings in MLflow's model_config, all columns double.
    trusted = save_pipeline(pipe, tmp_path / "pipeline.skops")
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(tmp_path / "served.py"),
            artifacts={"pipeline": str(tmp_path / "pipeline.skops")},
            model_config={"threshold": 0.5, "feature_columns": list(X.columns),
                          "skops_trusted_types": trusted},
            # Listed, as gymchurn always has: MLflow would otherwise infer them by loading the
            # model in a child process (seconds).
            pip_requirements=pip_requirements(pipe),
            signature=infer_signature(example, output))
    mlflow.register_model(info.model_uri, "old")
    model = mlflow.pyfunc.load_model("models:/old/1")
    ok = X.astype("float64").head(20)
    np.testing.assert_allclose(model.predict(ok)["churn_probability"], pipe.predict_proba(ok)[:, 1])
    loaded, threshold = load_fitted_pipeline("old", 1)  # what predict, promote and report use
    assert threshold == 0.5
    np.testing.assert_allclose(loaded.predict_proba(ok)[:, 1], pipe.predict_proba(ok)[:, 1])


def test_versions_pointing_one_alias_at_once_all_succeed(tmp_path):
    # MLflow's SQL store reads, then inserts an alias: threads released together race on the
    # insert (without the retry, most rounds here lost one writer to a UNIQUE constraint).
    import threading

    from mlflow.tracking import MlflowClient

    from gymchurn.registry import alias_versions, set_alias

    client = MlflowClient()  # conftest points tracking at a SQLite store in tmp_path
    for round_ in range(8):
        name = f"raced-{round_}"
        client.create_registered_model(name)
        versions = [client.create_model_version(name, f"file://{tmp_path}/m").version
                    for _ in range(4)]
        start, errors = threading.Barrier(len(versions)), []

        def point(version, name=name, start=start, errors=errors):
            start.wait()
            try:
                set_alias(name, "challenger", version)
            except Exception as err:  # noqa: BLE001 - the test reports whatever a writer met
                errors.append(err)

        threads = [threading.Thread(target=point, args=(v,)) for v in versions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert alias_versions(name)["challenger"] in {str(v) for v in versions}
