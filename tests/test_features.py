"""Feature stage: the behaviour-change transformer and the pipeline's column selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.config import compose_config
from gymchurn.data import feature_columns
from gymchurn.features import BehaviourChangeFeatures
from gymchurn.pipeline import build_pipeline


@pytest.fixture
def three_customers() -> pd.DataFrame:
    return pd.DataFrame({
        "Contract_period": [12, 1, 6],
        "Month_to_end_contract": [9, 1, 1],
        "Lifetime": [4, 0, 9],
        "Avg_additional_charges_total": [100.0, 0.0, 50.0],
        "Avg_class_frequency_total": [2.0, 0.0, 1.5],
        "Avg_class_frequency_current_month": [1.0, 0.0, 3.0],
    })


def test_behaviour_change_features_values(three_customers):
    before = three_customers.copy()
    out = BehaviourChangeFeatures().fit(three_customers).transform(three_customers)
    expected = pd.DataFrame({
        "visit_trend": [0.5, 1.0, 2.0],          # no lifetime visits -> 1 ("as usual")
        "visit_drop": [1.0, 0.0, -1.5],
        "months_served": [3, 0, 5],
        "contract_progress": [0.25, 0.0, 5 / 6],
        "spend_per_month": [20.0, 0.0, 5.0],
    })
    for name in expected:
        np.testing.assert_allclose(out[name].to_numpy(dtype=float), expected[name], err_msg=name)
    assert np.isfinite(out[BehaviourChangeFeatures.new_columns].to_numpy(dtype=float)).all()
    # Input columns are kept unchanged, and the input frame is not modified.
    pd.testing.assert_frame_equal(out[list(three_customers.columns)], before)
    pd.testing.assert_frame_equal(three_customers, before)


def test_zero_total_frequency_gives_trend_one_even_with_current_visits(three_customers):
    three_customers.loc[1, "Avg_class_frequency_current_month"] = 0.5
    out = BehaviourChangeFeatures().fit_transform(three_customers)
    assert out.loc[1, "visit_trend"] == 1.0


def test_feature_names_out_match_the_output(three_customers):
    step = BehaviourChangeFeatures().fit(three_customers)
    out = step.transform(three_customers)
    names = list(step.get_feature_names_out())
    assert names == list(out.columns)
    assert names == [*three_customers.columns, *BehaviourChangeFeatures.new_columns]
    assert step.n_features_in_ == three_customers.shape[1]


def test_engineered_pipeline_feeds_the_new_columns_to_the_model(customers):
    cfg = compose_config(overrides=["model=logreg", "features=engineered"])
    columns = feature_columns(cfg.data)
    pipe = build_pipeline(cfg.features, cfg.model, columns).fit(
        customers[columns], customers[cfg.data.target]
    )
    seen = list(pipe[-1].feature_names_in_)
    assert seen == [*columns, *BehaviourChangeFeatures.new_columns]


@pytest.mark.parametrize("features", ["raw", "engineered"])
def test_pipeline_ignores_extra_columns_at_predict_time(customers, features):
    cfg = compose_config(overrides=["model=lgbm", f"features={features}", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    pipe = build_pipeline(cfg.features, cfg.model, columns, {"n_estimators": 40})
    pipe.fit(customers[columns], customers[cfg.data.target])

    X = customers[columns].iloc[:50]
    with_id = X.copy()
    with_id.insert(0, "customer_id", [f"id-{i}" for i in range(len(X))])
    reordered = with_id[["customer_id", *reversed(columns)]]

    plain = pipe.predict_proba(X)[:, 1]
    assert len(np.unique(plain)) > 1  # a model that learnt something
    np.testing.assert_array_equal(pipe.predict_proba(with_id)[:, 1], plain)
    np.testing.assert_array_equal(pipe.predict_proba(reordered)[:, 1], plain)
    assert "customer_id" not in pipe[-1].feature_names_in_
