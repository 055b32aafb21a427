"""Per-customer reasons: exact contributions per model family, and their wording."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.churn.reasons import (
    LightGBMContributions,
    contribution_method,
    contributions,
    model_input,
    top_reasons,
)
from gymchurn.config import compose_config
from gymchurn.data import feature_columns
from gymchurn.pipeline import build_pipeline


def fitted(model: str, customers, features: str = "engineered"):
    cfg = compose_config(overrides=[f"model={model}", f"features={features}", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    params = {"n_estimators": 80} if "n_estimators" in cfg.model.estimator else {}
    pipe = build_pipeline(cfg.features, cfg.model, columns, params)
    pipe.fit(customers[columns], customers["Churn"])
    return pipe, model_input(pipe, customers[columns])


def test_lightgbm_pattern_contributions_equal_pred_contrib(customers):
    pipe, X = fitted("lgbm", customers)
    booster = pipe[-1].booster_
    values = X.to_numpy(dtype=float).copy()
    method = LightGBMContributions(pipe[-1])
    method.min_rows = 0  # the pattern path even on these few rows
    assert method.by_pattern
    # Customers exactly on split thresholds (`x <= threshold` goes left, in both computations):
    # in every other row, every split feature on one of its thresholds.
    rng = np.random.default_rng(0)
    for feature, cuts in method.cuts.items():
        values[::2, feature] = rng.choice(cuts, size=len(values[::2]))
    expected = booster.predict(values, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(method(values, 2), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(method(values, 1), expected, rtol=0, atol=1e-12)  # one thread
    # Missing values: those rows take LightGBM's own call (the pattern ignores default
    # directions), the others the pattern path.
    values[3, 7] = np.nan
    np.testing.assert_allclose(method(values, 1), booster.predict(
        values, pred_contrib=True)[:, :-1], rtol=0, atol=1e-12)


def test_lightgbm_patterns_with_repeated_features_and_single_leaf_trees(customers):
    """Deep trees (a feature split again on the same path) and trees that are one leaf."""
    cfg = compose_config(overrides=["model=lgbm", "features=raw", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    pipe = build_pipeline(cfg.features, cfg.model, columns, {
        "n_estimators": 40, "num_leaves": 64, "min_child_samples": 2, "learning_rate": 0.3})
    pipe.fit(customers[columns], customers["Churn"])
    X = model_input(pipe, customers[columns]).to_numpy(dtype=float)
    method = LightGBMContributions(pipe[-1])
    method.min_rows = 0
    assert method.by_pattern
    expected = pipe[-1].booster_.predict(X, pred_contrib=True)[:, :-1]
    np.testing.assert_allclose(method(X, 2), expected, rtol=0, atol=1e-12)


def test_contributions_add_up_to_the_raw_score_in_batches(customers):
    pipe, X = fitted("xgb", customers, features="raw")
    name, method = contribution_method(pipe[-1])
    assert name == "xgboost pred_contribs"
    done = []
    values = contributions(method, X, n_jobs=1, batch_rows=250, progress=lambda d, t: done.append(d))
    assert done == [250, 500, 600]
    margin = pipe[-1].predict(X, output_margin=True)
    bias = margin - values.sum(axis=1)
    np.testing.assert_allclose(bias, bias[0], atol=1e-4)  # contributions + one expected value


def test_linear_reasons_are_coefficient_times_standardised_value(customers):
    pipe, X = fitted("logreg", customers, features="raw")
    name, method = contribution_method(pipe[-1])
    assert name.startswith("linear")
    np.testing.assert_allclose(contributions(method, X), X.to_numpy() * pipe[-1].coef_[0])


def test_top_reasons_name_the_features_that_raise_the_risk():
    X = pd.DataFrame({"Age": [27.0, 40.0], "Lifetime": [1.0, 12.0], "visit_trend": [0.42, 1.0]})
    contrib = np.array([[0.5, 1.25, 0.75], [-0.2, -1.0, 0.3]])
    first, second, third = top_reasons(contrib, X)
    assert first == ["Lifetime = 1 (+1.25)", "visit_trend = 1 (+0.30)"]
    assert second == ["visit_trend = 0.42 (+0.75)", None]  # only risk-raising features count
    assert third == ["Age = 27 (+0.50)", None]


def test_a_model_without_exact_reasons_is_refused():
    from sklearn.neighbors import KNeighborsClassifier

    from gymchurn.errors import GymchurnError

    with pytest.raises(GymchurnError, match="reasons=none"):
        contribution_method(KNeighborsClassifier())
