"""Target groups: the cohort curve against a direct count; rule groups find a planted pattern,
and the sentences change with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.reporting.groups import cohort_table, rule_groups, target_groups

CFG = compose_config("report")
COLUMNS = feature_columns(CFG.data)
DATA_COLUMNS = OmegaConf.to_container(CFG.data.columns)
LABELS = OmegaConf.to_container(CFG.data.labels)
PHRASES = OmegaConf.to_container(CFG.data.phrases)
SETTINGS = OmegaConf.to_container(CFG.groups)


def planted(where: str, n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Customers who leave with 90 % chance where `where` holds, else 5 %."""
    df = make_synthetic_customers(n, seed=seed)
    rng = np.random.default_rng(seed)
    risky = df.eval(where).to_numpy()
    df["Churn"] = (rng.random(n) < np.where(risky, 0.9, 0.05)).astype(int)
    return df


def test_cohort_table_counts_directly():
    df = planted("Lifetime <= 1")
    table = cohort_table(df, "Churn", "Lifetime", "Contract_period", 6)
    one = df[(df.Lifetime == 0) & (df.Contract_period == 1)]
    assert table.loc[0, ("rate", 1)] == pytest.approx(one.Churn.mean())
    assert table.loc[0, ("n", 1)] == len(one)
    late = df[(df.Lifetime >= 7) & (df.Contract_period == 12)]
    assert table.loc[7, ("n", 12)] == len(late)  # month 7 pools 7 and more


@pytest.mark.parametrize("where, words", [
    ("Lifetime <= 1 and Contract_period == 1", ["months as a member ≤ 1", "contract length (months) = 1"]),
    ("Age <= 24", ["age ≤ 24"]),
])
def test_rule_groups_find_the_planted_group(where, words):
    df = planted(where)
    groups = rule_groups(df, "Churn", COLUMNS, 3, 0.03, 0, DATA_COLUMNS, LABELS, PHRASES)
    assert groups["customers"].sum() == len(df) and groups["leavers"].sum() == df.Churn.sum()
    assert groups["leavers"].is_monotonic_decreasing and (groups["conditions"] <= 3).all()
    top = groups.iloc[0]
    assert all(w in top.rule for w in words) and top.churn_rate > 0.8
    # The groups with high churn together are the planted group (a leaf may split it further).
    risky = groups[groups["churn_rate"] > 0.8]
    assert risky["customers"].sum() == pytest.approx(df.eval(where).sum(), rel=0.1)


def test_the_section_sentences_follow_the_data():
    for where, word in (("Lifetime <= 1 and Contract_period == 1", "months as a member"),
                        ("Age <= 24", "age ≤ 24")):
        section = target_groups(planted(where), "Churn", COLUMNS, DATA_COLUMNS, LABELS, PHRASES,
                                SETTINGS, 0)
        text = " ".join(section.sentences)
        assert word in text.split("the most leavers first:")[1]
        assert {b.name for b in section.blocks if hasattr(b, "name")} == {"cohort_curve"}
