"""Segments as rules: the rule assigner, rule fidelity, distinct column groups and the guard
against near-duplicate clustering inputs, against direct computations on generated tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.rules import rule_expression
from gymchurn.segments.rules import (
    RuleAssigner,
    column_groups,
    correlated_pairs,
    distinct_groups,
    rule_fidelity,
    segment_rules,
)

DATA_COLUMNS = {"Lifetime": {"kind": "int", "min": 0, "max": 600},
                "Group_visits": {"kind": "int", "values": [0, 1]},
                "Age": {"kind": "int", "min": 14, "max": 100}}
PHRASES = {"Group_visits": {"high": "takes group classes", "low": "no group classes"}}


def customers(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"Lifetime": rng.integers(0, 12, n), "Group_visits": rng.integers(0, 2, n),
                         "Age": rng.integers(18, 60, n)})


def box_clusters(df: pd.DataFrame) -> np.ndarray:
    """Three clusters that are boxes in the raw columns: a depth-2 tree finds them exactly."""
    return np.where(df.Lifetime <= 2, np.where(df.Group_visits == 1, 0, 1), 2)


def test_rules_reproduce_box_clusters_exactly_and_read_as_filters():
    df = customers()
    clusters = box_clusters(df)
    assigner = RuleAssigner(max_depth=3, max_leaves=3).fit(df, clusters)
    fidelity = rule_fidelity(assigner.labels_, clusters)
    assert (fidelity["fidelity"] == 1.0).all() and assigner.n_segments_ == 3
    # Numbered from the largest; a new customer gets the leaf its columns lead to.
    sizes = np.bincount(assigner.labels_)
    assert list(sizes) == sorted(sizes, reverse=True)
    assert (assigner.predict(df) == assigner.labels_).all()
    # Each segment's rule reads in words (<= 3 conditions) and, as a filter expression,
    # selects exactly its customers again.
    rules = segment_rules(assigner, df, DATA_COLUMNS, {"Lifetime": "months as a member"}, PHRASES)
    assert list(rules["segment"]) == [0, 1, 2] and (rules["conditions"] <= 3).all()
    for r in rules.itertuples():
        assert (df.eval(r.filter) == (assigner.labels_ == r.segment)).all(), r.filter
    words = set(rules["rule"])
    assert "months as a member ≥ 3" in words
    assert {"months as a member ≤ 2 and no group classes",
            "months as a member ≤ 2 and takes group classes"} <= words


def test_filters_print_cuts_a_crm_reproduces():
    df = pd.DataFrame({"Contract_period": [1, 1, 6, 12, 12, 6],
                       "visits": [0.5, 1.25, 2.125, 3.0, 0.75, 1.5],
                       "Lifetime": [0, 1, 2, 3, 4, 5]})
    rules = {"Contract_period": {"kind": "int", "values": [1, 3, 6, 12]},
             "visits": {"kind": "float"}, "Lifetime": {"kind": "int"}}
    assert rule_expression({"Contract_period": (1.5, None)}, df, rules) == "Contract_period >= 3"
    assert rule_expression({"Contract_period": (3.5, 9.0)}, df, rules) == "Contract_period == 6"
    assert rule_expression({"Lifetime": (1.5, 3.5)}, df, rules) == "Lifetime >= 2 and Lifetime <= 3"
    expression = rule_expression({"visits": (None, 1.3750001)}, df, rules)
    assert expression == "visits <= 1.38"  # two decimals: the first that select the same customers
    assert df.eval(expression).tolist() == (df.visits <= 1.3750001).tolist()
    assert rule_expression({}, df, rules) == "True"


def test_fidelity_is_recall_and_precision_against_the_majority_cluster():
    segments = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    clusters = np.array([5, 5, 5, 7, 7, 7, 7, 7])
    table = rule_fidelity(segments, clusters).set_index("segment")
    # Segment 0: cluster 5 (3 of its 4); cluster 5 has 3 members, all in segment 0.
    assert table.loc[0, "cluster"] == 5 and table.loc[0, "recall"] == 1.0
    assert table.loc[0, "precision"] == 0.75 and table.loc[0, "fidelity"] == 0.75
    # Segment 1: cluster 7 (all 4); cluster 7 has 5 members, 4 here.
    assert table.loc[1, "recall"] == 0.8 and table.loc[1, "fidelity"] == 0.8


def test_near_duplicate_columns_count_once_and_are_refused_as_inputs():
    rng = np.random.default_rng(1)
    contract = rng.choice([1, 6, 12], 800).astype(float)
    df = pd.DataFrame({"contract": contract,
                       "months_left": contract - rng.integers(0, 2, 800),   # r > 0.9
                       "visits": rng.random(800), "age": rng.integers(18, 60, 800)})
    groups = column_groups(df, 0.9)
    assert groups["months_left"] == groups["contract"] == "contract"
    assert groups["visits"] == "visits" and groups["age"] == "age"
    pairs = correlated_pairs(df, ["contract", "months_left", "visits"], 0.9)
    assert [(a, b) for a, b, _ in pairs] == [("contract", "months_left")]
    assert correlated_pairs(df, ["contract", "visits", "age"], 0.9) == []
    # A segment of long contracts differs on contract and months left: one group, not two.
    segments = (df.contract == 12).astype(int).to_numpy()
    found = distinct_groups(df, segments, groups, 0.5)
    assert found[1] == ["contract"] or found[1] == ["months_left"]


def test_distinct_groups_match_a_direct_standardised_difference():
    df = customers(seed=3).astype(float)
    segments = box_clusters(df)
    found = distinct_groups(df, segments, {c: c for c in df.columns}, 0.5)
    for s, columns in found.items():
        inside = segments == s
        effect = ((df[inside].mean() - df[~inside].mean()) / df.std(ddof=0)).abs()
        assert set(columns) == set(effect[effect >= 0.5].index)
        assert "Age" not in columns  # the clusters say nothing about age


@pytest.mark.parametrize("max_leaves", [2, 4])
def test_the_number_of_segments_is_at_most_max_leaves(max_leaves):
    df = customers()
    assigner = RuleAssigner(max_depth=3, max_leaves=max_leaves).fit(df, box_clusters(df))
    assert assigner.n_segments_ <= max_leaves


def test_the_guard_keeps_near_duplicate_subsets_out_of_the_search():
    from gymchurn.segments.fit import near_duplicate_subsets

    df = customers().astype(float)
    df["Lifetime_copy"] = df["Lifetime"] * 2 + 1  # a near duplicate
    refused = near_duplicate_subsets(df, {"ok": ["Lifetime", "Group_visits"],
                                          "twice": ["Lifetime", "Age", "Lifetime_copy"]}, 0.9)
    assert list(refused) == ["twice"]
    assert [(a, b) for a, b, _ in refused["twice"]] == [("Lifetime", "Lifetime_copy")]
