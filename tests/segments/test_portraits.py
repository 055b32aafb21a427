"""Portraits: generated segment names and the portrait table (gymchurn.segments.portraits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.churn.actions import load_catalogue
from gymchurn.segments.portraits import (
    name_segments,
    portrait_paragraph,
    portrait_table,
    segment_measure,
    standardised_differences,
)

PHRASES = {"Contract_period": {"high": "long contract", "low": "short contract"},
           "Lifetime": {"high": "long-standing", "low": "newcomers"}}


def test_names_come_from_what_sets_segments_apart():
    differences = pd.DataFrame(
        {"Contract_period": [1.9, -1.2, 0.3], "Month_to_end_contract": [1.8, -1.1, 0.3],
         "Lifetime": [0.9, -0.8, 0.1], "Age": [0.0, 0.0, 0.05]}, index=[0, 1, 2])
    corr = pd.DataFrame(np.eye(4), index=differences.columns, columns=differences.columns)
    corr.loc["Contract_period", "Month_to_end_contract"] = 0.97
    corr.loc["Month_to_end_contract", "Contract_period"] = 0.97
    names = name_segments(differences, PHRASES, 2, 0.5, corr, 0.8)
    # Month_to_end_contract nearly copies Contract_period, so Lifetime is the second word.
    assert names[0] == "long contract, long-standing"
    assert names[1] == "short contract, newcomers"
    assert names[2] == "near average, leaning long contract"
    assert name_segments(differences.assign(Contract_period=[1.9, -1.2, 0.0],
                                            Month_to_end_contract=0.0, Lifetime=0.0),
                         PHRASES)[2] == "typical customers"


def test_clashing_names_get_another_word_or_the_segment_id():
    differences = pd.DataFrame({"Contract_period": [1.5, 1.4, 1.3], "Age": [0.9, -0.9, 0.0]})
    names = name_segments(differences, PHRASES, n_words=1)
    # 0 and 1 both start "long contract": each gets its next word; 2 is then unique.
    assert names == {0: "long contract, high Age", 1: "long contract, low Age",
                     2: "long contract"}
    twins = pd.DataFrame({"Contract_period": [1.5, 1.5, -1.0], "Age": [0.9, 0.9, 0.0]})
    names = name_segments(twins, PHRASES, n_words=1)
    assert names[0] == "long contract, high Age (segment 0)"
    assert names[1] == "long contract, high Age (segment 1)"
    assert names[2] == "short contract"


def test_portrait_table_describes_every_column(customers):
    columns = [c for c in customers.columns if c != "Churn"]
    X = customers[columns]
    labels = (X["Contract_period"] > 1).astype(int).to_numpy() + (X["Lifetime"] > 5).to_numpy()
    differences = standardised_differences(X, labels)
    names = {s: f"segment {s}" for s in np.unique(labels)}
    table = portrait_table(X, labels, customers["Churn"], names, differences, top_features=2)
    assert set(columns) <= set(table.columns)  # every column, not only the clustered ones
    assert table["size"].sum() == len(X) and table["share"].sum() == pytest.approx(1)
    for _, row in table.iterrows():
        inside = labels == row["segment"]
        assert row["churn_rate"] == pytest.approx(customers["Churn"][inside].mean())
        assert row["Age"] == pytest.approx(X["Age"][inside].mean())
        assert row["sets_apart"].count(",") == 1  # two features
    # Standardised difference: (mean inside - mean of the rest) / overall std.
    inside = labels == 0
    expected = (X["Lifetime"][inside].mean() - X["Lifetime"][~inside].mean()) / X["Lifetime"].std(ddof=0)
    assert differences.loc[0, "Lifetime"] == pytest.approx(expected)


def test_names_start_from_the_rule_then_what_else_sets_the_segment_apart():
    differences = pd.DataFrame({"Lifetime": [-0.3, 0.9], "Contract_period": [-1.5, 1.2],
                                "Age": [0.1, 0.7]}, index=[0, 1])
    phrases = {**PHRASES, "Age": {"high": "older", "low": "younger"}}
    rules = {0: ["Lifetime"], 1: ["Lifetime"]}
    names = name_segments(differences, phrases, 2, 0.5, rule_columns=rules)
    # The rule's column comes first even below min_effect; then the strongest other column.
    assert names == {0: "newcomers, short contract", 1: "long-standing, long contract"}
    assert name_segments(differences, phrases, 3, 0.5, rule_columns=rules)[1] == \
        "long-standing, long contract, older"


def test_a_portrait_paragraph_covers_every_column_with_its_numbers():
    members = pd.DataFrame({"Age": [20, 30, 40], "Group_visits": [1, 0, 0], "Phone": [1, 1, 1]})
    templates = {"Group_visits": "{share:.0f} % take group classes", "Age": "aged {mean:.0f}"}
    text = portrait_paragraph(members, templates)
    # Template order first; a column without a template still appears, by name.
    assert text == "33 % take group classes; aged 30; Phone 1.00."


def test_the_suggested_measure_is_tied_to_what_the_segment_stands_out_on():
    catalogue = load_catalogue({"default_action": "call", "items": [
        {"name": "onboarding", "for": "Lifetime <= 1", "action": "welcome", "driver": "Lifetime"},
        {"name": "group trial", "for": "Group_visits == 0", "action": "trial",
         "driver": "Group_visits"}]})
    members = pd.DataFrame({"Lifetime": [0, 1, 5, 7], "Group_visits": [0, 0, 0, 1]})
    churned = np.array([1, 1, 0, 0])
    tied = segment_measure(members, churned, catalogue, ["Group_visits"])
    assert tied["measure"] == "group trial" and tied["covers"] == 0.75 and tied["why"] == "driver"
    # Without a driver it stands out on: the measure meant for most of its leavers.
    reach = segment_measure(members, churned, catalogue, ["Age"])
    assert reach["measure"] == "onboarding" and reach["covers_churned"] == 1.0
    assert segment_measure(members, np.zeros(4), catalogue, [])["measure"] == "default"
