"""Caveats, each measured: quality without this month's visits, self-selection, one snapshot,
calibration by decile; checked against direct computations on generated tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from gymchurn.reporting.caveats import calibration_by_decile, caveats

SETTINGS = {"visits_now": "now", "visits_usual": "usual", "self_selected": "contract", "deciles": 4}


def table(leak: bool, seed: int = 0) -> pd.DataFrame:
    """`now` decides churn when `leak` (the churn definition); else `age` does and `now` is
    noise around `usual`."""
    rng = np.random.default_rng(seed)
    n = 600
    usual = rng.uniform(1, 3, n)
    age = rng.integers(18, 60, n)
    contract = rng.choice([1, 12], n)
    if leak:
        churn = (rng.random(n) < 0.3).astype(int)
        now = np.where(churn == 1, 0.0, usual)
    else:
        churn = (rng.random(n) < 1 / (1 + np.exp((age - 30) / 3))).astype(int)
        now = usual + rng.normal(0, 0.1, n)
    return pd.DataFrame({"usual": usual, "now": now, "age": age, "contract": contract,
                         "churn": churn})


def run(df: pd.DataFrame):
    features = ["usual", "now", "age", "contract"]
    pipeline = Pipeline([("model", LogisticRegression(max_iter=1000))])
    fold = np.arange(len(df)) % 5
    oof = np.zeros(len(df))
    for k in range(5):
        fitted = Pipeline([("model", LogisticRegression(max_iter=1000))]).fit(
            df.loc[fold != k, features], df.loc[fold != k, "churn"])
        oof[fold == k] = fitted.predict_proba(df.loc[fold == k, features])[:, 1]
    return caveats(pipeline, df, features, "churn", oof, fold, SETTINGS,
                   {"now": "visits this month"}, driver_rank=1)


def test_a_column_that_is_the_churn_definition_is_called_out():
    leaky, honest = run(table(leak=True)), run(table(leak=False))
    assert leaky.numbers["oof_auc"] > 0.95
    assert leaky.numbers["oof_auc_without_visits_now"] < 0.65
    assert "much of the model's edge rests on it" in leaky.sentences[0]
    assert abs(honest.numbers["oof_auc"] - honest.numbers["oof_auc_without_visits_now"]) < 0.05
    assert "it stands without it" in honest.sentences[0]
    assert f"{honest.numbers['oof_auc_without_visits_now']:.2f} of the time" in honest.sentences[0]
    assert leaky.sentences[0].startswith("**This month's visits.** The strongest signal, visits "
                                         "this month")


def test_self_selection_quotes_the_contract_churn_rates():
    df = table(leak=True)
    section = run(df)
    rates = df.groupby("contract")["churn"].mean()
    assert section.numbers["churn_longest_contract"] == pytest.approx(rates[12])
    assert f"{rates[12]:.0%} against {rates[1]:.0%} on 1-month ones" in section.sentences[1]
    assert "600 customers" in section.sentences[2]


def test_calibration_by_decile_matches_a_direct_cut():
    rng = np.random.default_rng(2)
    proba = rng.random(400)
    y = (rng.random(400) < proba).astype(int)
    deciles = calibration_by_decile(y, proba, 4)
    order = np.argsort(proba, kind="stable")
    for k in range(4):
        part = order[100 * k:100 * (k + 1)]
        assert deciles.loc[k, "predicted"] == pytest.approx(proba[part].mean())
        assert deciles.loc[k, "observed"] == pytest.approx(y[part].mean())
    assert deciles["customers"].tolist() == [100] * 4


def test_the_calibration_sentence_follows_the_largest_gap():
    section = run(table(leak=False))
    deciles = section.numbers["calibration"]
    gap = (deciles["predicted"] - deciles["observed"]).abs().max()
    assert section.numbers["calibration_max_gap"] == pytest.approx(gap)
    assert f"differ by at most {100 * gap:.1f} points" in section.sentences[3]
