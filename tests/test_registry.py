"""Registry stage: pipelines are saved with skops, trusting only the pipeline's own types."""

from __future__ import annotations

from importlib import metadata

import numpy as np
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
