"""Target groups: the cohort curve against a direct count; rule groups find a planted pattern,
and the sentences change with it."""

from __future__ import annotations

import operator
import re

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.reporting.blocks import Table
from gymchurn.reporting.groups import cohort_table, rule_groups, target_groups

CFG = compose_config("report")
COLUMNS = feature_columns(CFG.data)
DATA_COLUMNS = OmegaConf.to_container(CFG.data.columns)
LABELS = OmegaConf.to_container(CFG.data.labels)
PHRASES = OmegaConf.to_container(CFG.data.phrases)
SETTINGS = OmegaConf.to_container(CFG.groups)
OPS = {"≤": operator.le, "<": operator.lt, "≥": operator.ge, ">": operator.gt, "=": operator.eq}


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
                                SETTINGS, 0, 4)
        text = " ".join(section.sentences)
        assert word in text.split("the most leavers first:")[1]
        assert {b.name for b in section.blocks if hasattr(b, "name")} == {"cohort_curve"}


def reapplied(rule: str, df: pd.DataFrame) -> pd.Series:
    """The customers a printed rule selects, read back from its words alone (the labels and
    phrases of conf/data/gym.yaml and the printed numbers), as a CRM user typing it would."""
    by_label = {label: column for column, label in LABELS.items()}
    by_phrase = {words: (column, side) for column, sides in PHRASES.items()
                 for side, words in sides.items()}
    mask = pd.Series(True, index=df.index)
    for part in rule.split(" and "):
        if part in by_phrase:  # a 0/1 column by its phrase: "high" is 1
            column, side = by_phrase[part]
            mask &= df[column] == int(side == "high")
            continue
        name, op, number = re.fullmatch(r"(.+) (≤|<|≥|>|=|is) (.+)", part).groups()
        x = df[by_label[name]]
        mask &= x.isin([float(v) for v in number.split(" or ")]) if op == "is" \
            else OPS[op](x, float(number))
    return mask


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_printed_rule_selects_its_stated_customers(seed):
    """Re-applying a rule as printed gives the customers and leavers stated beside it (a float
    cut printed too coarsely would take in customers on the far side of the tree's cut)."""
    df = make_synthetic_customers(4000, seed=seed)  # real-looking: continuous visits, spend
    groups = rule_groups(df, "Churn", COLUMNS, int(SETTINGS["max_depth"]),
                         float(SETTINGS["min_share"]), seed, DATA_COLUMNS, LABELS, PHRASES)
    assert any(re.search(r"\d\.\d", rule) for rule in groups["rule"])  # float cuts are printed
    for row in groups.itertuples(index=False):
        mask = reapplied(row.rule, df)
        assert (mask.to_numpy() == row.members).all(), row.rule
        assert (mask.sum(), df.Churn[mask].sum()) == (row.customers, row.leavers), row.rule
    # Both sides of a split print the same number: "≤ c" in one rule, "> c" in its sibling.
    cuts = {c for rule in groups["rule"] for c in re.findall(r"visits a week this month [≤>] ([\d.]+)", rule)}
    assert len(cuts) <= len({r for r in groups["rule"] if "visits a week this month" in r})


def test_a_float_cut_is_printed_so_the_rule_keeps_its_customers():
    """The tree cuts between 1.3131 and 1.32 (at 1.31655). Two decimals cannot say it: "≤ 1.31"
    drops the customers at 1.3131, "≤ 1.32" takes in those at 1.32; three can ("≤ 1.317")."""
    df = pd.DataFrame({"Avg_class_frequency_current_month": np.r_[np.full(50, 1.3131),
                                                                  np.full(50, 1.32), np.full(50, 2.0)]})
    df["Churn"] = np.r_[np.ones(50), np.zeros(100)].astype(int)
    groups = rule_groups(df, "Churn", ["Avg_class_frequency_current_month"], 1, 0.1, 0,
                         DATA_COLUMNS, LABELS, PHRASES)
    assert list(groups["rule"]) == ["visits a week this month ≤ 1.317", "visits a week this month > 1.317"]
    assert [reapplied(r, df).sum() for r in groups["rule"]] == [50, 100]


def test_the_table_names_the_target_groups_of_page_one():
    """G1, G2, ...: the groups whose churn is above the table's, the most leavers first, at most
    n_targets; the sentence states that rule with its numbers."""
    df = make_synthetic_customers(4000, seed=0)
    rate = df.Churn.mean()
    for n_targets in (0, 2, 4, 50):
        section = target_groups(df, "Churn", COLUMNS, DATA_COLUMNS, LABELS, PHRASES, SETTINGS, 0,
                                n_targets)
        groups = section.numbers["rule_groups"]
        chosen = groups[groups["churn_rate"] > rate].head(n_targets)  # page one's choice
        assert groups.loc[chosen.index, "group"].tolist() == [f"G{i + 1}" for i in range(len(chosen))]
        assert (groups.drop(index=chosen.index)["group"] == "").all()
        table = next(b for b in section.blocks if isinstance(b, Table)).frame
        assert list(table.columns)[:2] == ["group", "rule"]
        assert [g for g in table["group"] if g] == chosen["group"].tolist()  # every one shown
        assert len(table) == max(int(SETTINGS["show"]), chosen.index.max() + 1 if len(chosen) else 0)
        text = " ".join(section.sentences)
        if len(chosen):
            assert (f"above the table's {rate:.0%}, the most leavers first, at most {n_targets}; "
                    f"together they hold {chosen.leavers.sum():,} of the {df.Churn.sum():,}") in text
        else:
            assert f"No group churns more than the table's {rate:.0%}" in text


def test_months_are_counted_as_the_data_counts_them():
    """Month 0 is the first month; the pooled last row is "after 7 or more months"."""
    df = planted("Lifetime <= 1")
    section = target_groups(df, "Churn", COLUMNS, DATA_COLUMNS, LABELS, PHRASES, SETTINGS, 0, 4)
    cohort = section.sentences[0]
    late = int(SETTINGS["cohort_months"]) + 1
    first = df[df.Lifetime == 0].groupby("Contract_period").Churn.mean()
    settled = df[df.Lifetime >= late].groupby("Contract_period").Churn.mean()
    assert "in their first month (0 months as a member) " in cohort
    assert f"{first[1]:.0%} of 1-month members leave" in cohort
    assert f"after {late} or more months as a member: " + ", ".join(
        f"{settled[c]:.0%}" for c in sorted(settled.index)) in cohort
    assert "from month" not in cohort
