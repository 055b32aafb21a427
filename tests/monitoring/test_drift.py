"""Data drift from reference statistics alone: no false alarms on a month drawn like training,
the moved columns flagged on a shifted one, and the sketch-based test agreeing with scipy's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from gymchurn.config import compose_config
from gymchurn.data import make_synthetic_customers
from gymchurn.monitoring import demo
from gymchurn.monitoring.drift import DriftThresholds, feature_drift, ks_test, psi
from gymchurn.monitoring.reference import (
    QUANTILE_POINTS,
    continuous_reference,
    feature_reference,
)

LIMITS = DriftThresholds(psi_watch=0.1, psi_drift=0.25, alpha=0.01, out_of_range_watch=0.01)


@pytest.fixture(scope="module")
def columns():
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config("monitor", ["input=x.csv"]).data.columns)


@pytest.fixture(scope="module")
def reference(columns):
    train = make_synthetic_customers(3200, seed=1).drop(columns="Churn")
    return feature_reference(train, columns)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_move():
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    small, large = psi([0.5, 0.5], [0.45, 0.55]), psi([0.5, 0.5], [0.2, 0.8])
    assert 0 < small < 0.05 < large
    # by hand: (0.8 - 0.5) ln(0.8/0.5) + (0.2 - 0.5) ln(0.2/0.5)
    assert large == pytest.approx(0.3 * np.log(1.6) - 0.3 * np.log(0.4))


def test_a_month_drawn_like_training_raises_no_feature(reference):
    month = make_synthetic_customers(4000, seed=2)
    table = feature_drift(reference, month, LIMITS)
    assert set(table["status"]) == {"ok"}, table[["feature", "psi", "p_value"]]
    assert len(table) == 13


def test_a_small_month_drawn_like_training_is_not_called_drift(reference):
    # 60 customers: PSI alone is noisy at this size; the test's p-value keeps it from drift.
    for seed in range(3, 8):
        table = feature_drift(reference, make_synthetic_customers(60, seed=seed), LIMITS)
        assert "drift" not in set(table["status"]), (seed, table[["feature", "psi", "p_value"]])


def test_the_shifted_month_flags_contracts_and_visits_and_nothing_else(reference):
    table = feature_drift(reference, demo.shifted(4000), LIMITS).set_index("feature")
    moved = {"Contract_period", "Month_to_end_contract", "Avg_class_frequency_current_month"}
    assert set(table.index[table["status"] != "ok"]) >= moved
    assert table.loc["Avg_class_frequency_current_month", "status"] == "drift"
    untouched = ["Age", "gender", "Phone", "Partner", "Group_visits", "Near_Location",
                 "Promo_friends", "Avg_additional_charges_total"]
    assert set(table.loc[untouched, "status"]) == {"ok"}
    contract = table.loc["Contract_period"]
    assert contract["test"] == "chi-square" and contract["p_value"] < 1e-10
    assert contract["now"] > contract["then"]  # the share of the value that moved most (1 month)


def test_values_training_never_had_are_counted_outside_its_range(reference):
    month = make_synthetic_customers(1000, seed=4)
    month.loc[:49, "Contract_period"] = 3        # allowed by the schema, never in training
    month.loc[:19, "Age"] = 70                   # above the training maximum
    table = feature_drift(reference, month, LIMITS).set_index("feature")
    assert table.loc["Contract_period", "out_of_range"] == pytest.approx(0.05)
    assert table.loc["Age", "out_of_range"] == pytest.approx(0.02)
    assert table.loc["Contract_period", "status"] in ("watch", "drift")
    assert table.loc["Age", "status"] == "watch"


def test_the_sketch_test_agrees_with_scipy_on_the_full_samples():
    rng = np.random.default_rng(0)
    train = rng.gamma(2.5, 60, 3200)
    for month in (rng.gamma(2.5, 60, 5000), rng.gamma(2.5, 70, 5000), np.round(rng.normal(29, 3, 800))):
        d, p = ks_test(continuous_reference(train), month)
        exact = ks_2samp(train, month)
        # the sketch's cumulative shares are off by at most one grid step
        assert abs(d - exact.statistic) <= 1 / (QUANTILE_POINTS - 1) + 1e-9
        assert (p < 0.01) == (exact.pvalue < 0.01)


def test_importance_rank_comes_from_the_reference(reference):
    importance = {"Lifetime": 0.2, "Age": 0.1}
    table = feature_drift(reference, make_synthetic_customers(500, seed=5), LIMITS, importance)
    ranks = table.set_index("feature")["importance_rank"]
    assert ranks["Lifetime"] == 1 and ranks["Age"] == 2 and ranks["Phone"] == 3


def test_continuous_reference_is_plain_json():
    import json

    reference = continuous_reference(pd.Series([1, 2, 2, 3, 10]).to_numpy())
    assert json.loads(json.dumps(reference)) == reference
    assert reference["min"] == 1 and reference["max"] == 10
    assert len(reference["quantiles"]) == QUANTILE_POINTS
