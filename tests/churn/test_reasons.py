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
    reason_values,
    reason_words,
    top_reasons,
)
from gymchurn.config import compose_config
from gymchurn.data import feature_columns
from gymchurn.errors import GymchurnError
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


def test_reasons_in_words_use_plain_names_and_the_customers_values():
    X = pd.DataFrame({"Age": [27.0, 40.0], "Lifetime": [1.0, 12.0], "visit_trend": [0.4213, 1.0],
                      "Avg_additional_charges_total": [236.4, 3.0]})
    contrib = np.array([[0.5, 1.25, 0.75, 0.1], [-0.2, -1.0, 0.3, -0.1]])
    labels = {"Lifetime": "months as a member", "visit_trend": "this month's visits against "
              "the average", "Avg_additional_charges_total": "spend on extras"}
    first, second, third = reason_words(contrib, X, labels)
    assert first.tolist() == ["months as a member = 1", "this month's visits against the average = 1"]
    assert second.tolist() == ["this month's visits against the average = 0.42", None]  # 2 digits
    assert third.tolist() == ["Age = 27", None]  # no label: the feature's own name
    # No model units, and no exponent notation for large values.
    [top] = reason_words(np.array([[0.0, 0.0, 0.0, 2.0]]), X.head(1), labels, k=1)
    assert top.tolist() == ["spend on extras = 236"]


@pytest.mark.parametrize("value, shown", [
    (0.00327, "0.0033"), (0.774, "0.77"), (52.7, "53"), (236.4, "236"), (3.0, "3"),
    (9.96, "10"), (0.1, "0.1"), (0.0000123, "0.000012"), (1.05e6, "1050000")])
def test_values_are_rounded_for_people(value, shown):
    """Two significant digits below 10, whole numbers from 10 on, whole numbers as such, never
    an exponent."""
    [top] = reason_words(np.array([[1.0]]), pd.DataFrame({"x": [value]}), {"x": "x"}, k=1)
    assert top.tolist() == [f"x = {shown}"]


def test_a_negative_value_reads_as_its_negative_label_with_its_size():
    """A negative visit_drop means visits rose: no "fewer than usual = -0.3"."""
    X = pd.DataFrame({"visit_drop": [-0.302, 0.4, 0.0, -0.302], "Age": [-2.5, 30.0, 30.0, 30.0]})
    labels = {"visit_drop": "visits a week fewer than usual this month", "Age": "age"}
    negative = {"visit_drop": "visits a week more than usual this month"}
    [top] = reason_words(np.array([[1.0, 0.0]] * 4), X, labels, k=1, negative_labels=negative)
    assert top.tolist() == ["visits a week more than usual this month = 0.3",
                            "visits a week fewer than usual this month = 0.4",
                            "visits a week fewer than usual this month = 0",
                            "visits a week more than usual this month = 0.3"]
    # Without a negative label the value keeps its sign; without negative labels, as before.
    [top] = reason_words(np.array([[0.0, 1.0]]), X.head(1), labels, k=1, negative_labels=negative)
    assert top.tolist() == ["age = -2.5"]
    [top] = reason_words(np.array([[1.0, 0.0]]), X.head(1), labels, k=1)
    assert top.tolist() == ["visits a week fewer than usual this month = -0.3"]


def test_reasons_in_words_match_a_row_by_row_wording_on_many_rows(customers):
    """The vectorised wording (each distinct value worded once) says for every row what a
    direct row-by-row loop says: the same features in the same order, the same shown value."""
    rng = np.random.default_rng(3)
    X = pd.concat([customers.drop(columns="Churn")] * 5, ignore_index=True)
    X["Avg_additional_charges_total"] += rng.normal(0, 0.01, len(X))  # many distinct values
    X["visit_drop"] = X["Avg_class_frequency_total"] - X["Avg_class_frequency_current_month"]
    contrib = rng.normal(size=X.shape)
    contrib[rng.random(X.shape) < 0.5] = -1.0  # many rows with fewer than 3 risk-raising
    negative = {"visit_drop": "visits rose by"}
    words = reason_words(contrib, X, {"Age": "age"}, negative_labels=negative)
    assert (X["visit_drop"] < 0).any() and (X["visit_drop"] > 0).any()
    for row in range(0, len(X), 7):
        raising = [f for f in np.argsort(-contrib[row], kind="stable") if contrib[row, f] > 0][:3]
        expected = []
        for f in raising:
            value, name = X.iat[row, f], {"Age": "age"}.get(X.columns[f], X.columns[f])
            if X.columns[f] in negative and value < 0:
                value, name = -value, negative[X.columns[f]]
            shown = (str(int(value)) if float(value).is_integer() else
                     f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}")
            expected.append(f"{name} = {shown}")
        expected += [None] * (3 - len(expected))
        assert [w[row] for w in words] == expected, row


def test_reason_values_are_the_customers_own_values_not_the_scaled_ones(customers):
    pipe, X = fitted("logreg", customers, features="engineered")  # StandardScaler before the model
    raw = customers[feature_columns(compose_config().data)]
    shown = reason_values(pipe, raw, X)
    assert list(shown.columns) == list(X.columns)
    np.testing.assert_allclose(shown["Lifetime"], raw["Lifetime"])
    np.testing.assert_allclose(shown["visit_drop"], raw["Avg_class_frequency_total"]
                               - raw["Avg_class_frequency_current_month"])
    assert not np.allclose(X["Lifetime"], raw["Lifetime"])  # what the model sees is scaled
    lgbm, X_lgbm = fitted("lgbm", customers)
    assert reason_values(lgbm, raw, X_lgbm) is X_lgbm  # nothing scaled: the model's input


def test_a_model_without_exact_reasons_is_refused():
    from sklearn.neighbors import KNeighborsClassifier


    with pytest.raises(GymchurnError, match="reasons=none"):
        contribution_method(KNeighborsClassifier())


def test_the_native_method_gives_the_compiled_kernels_numbers(customers):
    """reasons.method=native (LightGBM's own pred_contrib) and the default compiled kernel:
    the same contributions, so either can stand in for the other."""
    pipe, X = fitted("lgbm", customers, features="engineered")
    compiled_name, compiled = contribution_method(pipe[-1])
    native_name, native = contribution_method(pipe[-1], "native")
    assert compiled_name.startswith("TreeSHAP") and native_name == "LightGBM pred_contrib"
    values = model_input(pipe, X)
    np.testing.assert_allclose(contributions(native, values), contributions(compiled, values),
                               rtol=0, atol=1e-12)
    with pytest.raises(GymchurnError, match="reasons.method=fast is not an option"):
        contribution_method(pipe[-1], "fast")
