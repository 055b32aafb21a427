"""The call list and its section against direct counts on small generated tables: only the
customers who stayed, ranked by out-of-fold probability, actions from the catalogue, and
sentences and numbers that follow the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from gymchurn.churn.actions import load_catalogue
from gymchurn.churn.out_of_fold import OutOfFold, out_of_fold
from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.pipeline import build_pipeline
from gymchurn.reporting.blocks import Table
from gymchurn.reporting.call_list import call_list_table, who_to_call

CFG = compose_config("report")
MEASURES = OmegaConf.to_container(CFG.measures)
CATALOGUE = load_catalogue(MEASURES)
NAMES = {0: "newcomers", 1: "loyal regulars", 2: "group-class goers"}


def generated(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, OutOfFold, np.ndarray]:
    """Customers, made-up out-of-fold scores (rounded to two decimals, so many ties) with
    reasons for some rows, and a segment per customer."""
    customers = make_synthetic_customers(n, seed=seed)
    rng = np.random.default_rng(seed)
    proba = np.round(rng.random(n), 2)
    first = np.array([f"visits a week this month = {v}" if v < 0.5 else None
                      for v in np.round(rng.random(n), 1)], dtype=object)
    second = np.array([f"months as a member = {m}" if r is not None else None
                       for m, r in zip(customers["Lifetime"], first, strict=True)], dtype=object)
    reasons = [first, second, np.full(n, None, dtype=object)]
    oof = OutOfFold(proba, reasons, rng.integers(0, 5, n))
    return customers, oof, rng.integers(0, 3, n)


def first_matching_action(row: pd.DataFrame) -> str:
    """The catalogue read directly: the first measure whose `for` holds, else the default."""
    for measure in MEASURES["items"]:
        if bool(row.eval(measure["for"]).iloc[0]):
            return measure["action"]
    return MEASURES["default_action"]


def test_only_customers_who_stayed_ranked_by_probability():
    customers, oof, segments = generated()
    table = call_list_table(customers, "Churn", oof, 0.6, segments, NAMES, CATALOGUE)

    stayed = np.flatnonzero(customers["Churn"].to_numpy() == 0)
    assert 0 < len(stayed) < len(customers)
    assert sorted(table["customer_row"] - 1) == stayed.tolist()
    assert table["priority_rank"].tolist() == list(range(1, len(stayed) + 1))
    rows = table["customer_row"].to_numpy() - 1
    assert np.all(np.diff(oof.proba[rows]) <= 0)  # highest first
    tie = pd.Series(oof.proba[rows]).duplicated(keep=False).to_numpy()
    assert tie.sum() > 10  # equal probabilities: by row number
    for p in np.unique(oof.proba[rows][tie]):
        assert np.all(np.diff(rows[oof.proba[rows] == p]) > 0)

    assert table["churn_probability"].tolist() == np.round(oof.proba[rows], 3).tolist()
    assert table["at_risk"].tolist() == (oof.proba[rows] >= 0.6).astype(int).tolist()
    for k in range(3):
        column = table[f"reason_{k + 1}"]
        assert column.isna().tolist() == [r is None for r in oof.reasons[k][rows]]
        assert column.dropna().tolist() == [r for r in oof.reasons[k][rows] if r is not None]
    assert table["segment"].tolist() == segments[rows].tolist()
    assert table["segment_name"].tolist() == [NAMES[s] for s in segments[rows]]
    # The customer's own columns follow, as in the table (a CRM matches on them).
    own = customers.drop(columns="Churn").iloc[rows].reset_index(drop=True)
    pd.testing.assert_frame_equal(table[list(own.columns)], own)
    assert list(table.columns[:4]) == ["priority_rank", "customer_row", "churn_probability",
                                       "at_risk"]


def test_actions_follow_the_catalogues_first_matching_measure():
    customers, oof, segments = generated(seed=1)
    table = call_list_table(customers, "Churn", oof, 0.5, segments, NAMES, CATALOGUE)
    expected = [first_matching_action(customers.iloc[[r - 1]]) for r in table["customer_row"]]
    assert table["suggested_action"].tolist() == expected
    assert table["suggested_action"].nunique() > 2


def test_a_customer_table_with_a_column_the_list_adds_is_refused():
    customers, oof, segments = generated()
    with pytest.raises(GymchurnError, match=r"column\(s\) \['segment'\].*rename them"):
        call_list_table(customers.assign(segment=1), "Churn", oof, 0.5, segments, NAMES,
                        CATALOGUE)


def test_the_section_counts_directly_and_attaches_the_list():
    customers, oof, segments = generated(seed=2)
    table = call_list_table(customers, "Churn", oof, 0.7, segments, NAMES, CATALOGUE)
    section = who_to_call(table, 0.7, "the champion's own threshold", show=8)
    stayed = customers["Churn"] == 0
    at_risk = stayed.to_numpy() & (oof.proba >= 0.7)

    assert section.key == "call" and section.title == "Who to call"
    assert section.files["call_list.csv"] is table
    numbers = section.numbers
    assert numbers["active"] == stayed.sum() and numbers["at_risk"] == at_risk.sum() > 0
    assert numbers["at_risk_share"] == pytest.approx(at_risk.sum() / stayed.sum())
    direct = {}
    for row in np.flatnonzero(at_risk):
        action = first_matching_action(customers.iloc[[row]])
        direct[action] = direct.get(action, 0) + 1
    assert numbers["actions_at_risk"] == direct
    top = np.sort(oof.proba[stayed.to_numpy()])[::-1][:8]
    assert numbers["top_probability_range"] == (pytest.approx(top.min()), pytest.approx(top.max()))

    text = " ".join(section.sentences)
    assert f"{stayed.sum():,} customers who are still members" in text
    assert f"{at_risk.sum():,} of them" in text and "at least 70.0%." in text
    assert "the champion's own threshold" in section.sentences
    assert f"from {top.min():.0%} to {top.max():.0%}" in text
    # Every action of the at-risk customers with its count, the most frequent first.
    said = [text.index(f'"{action}" for {count:,}') for action, count in
            sorted(direct.items(), key=lambda item: (-item[1], item[0]))]
    assert said == sorted(said)
    assert "call_list.csv" in text and "out-of-fold" in text

    [shown] = [b for b in section.blocks if isinstance(b, Table)]
    assert len(shown.frame) == 8
    assert list(shown.frame.columns) == ["rank", "row", "risk", "reasons", "segment", "action"]
    assert shown.frame["row"].tolist() == table["customer_row"].head(8).astype(str).tolist()
    assert shown.frame["risk"].iloc[0] == f"{100 * top.max():.0f}%"


def test_the_sentences_follow_the_threshold_and_the_reasons():
    customers, oof, segments = generated(seed=3)
    table = call_list_table(customers, "Churn", oof, 1.5, segments, NAMES, CATALOGUE)
    section = who_to_call(table, 1.5, "a note", show=5)
    text = " ".join(section.sentences)
    assert section.numbers["at_risk"] == 0 and "None of them reaches the threshold of 150.0%" in text
    assert "Suggested actions" not in text and section.numbers["actions_at_risk"] == {}

    # The first reason of the top rows, by its plain name (without the customer's value).
    names = table.head(5)["reason_1"].dropna().str.rsplit(" = ", n=1).str[0]
    assert len(names) > 0 and set(names) == {"visits a week this month"}
    assert f'for {len(names)} of them the first reason is "visits a week this month"' in text
    # Without reasons (none computed), the top is described without one.
    oof.reasons = [np.full(len(customers), None, dtype=object)] * 3
    table = call_list_table(customers, "Churn", oof, 0.5, segments, NAMES, CATALOGUE)
    text = " ".join(who_to_call(table, 0.5, "a note", show=5).sentences)
    assert "first reason" not in text and "The first 5 on the list have churn probabilities" in text
    # A top whose probabilities read the same is one probability, not a range "from x to x".
    oof.proba = np.full(len(customers), 0.42)
    table = call_list_table(customers, "Churn", oof, 0.5, segments, NAMES, CATALOGUE)
    text = " ".join(who_to_call(table, 0.5, "a note", show=5).sentences)
    assert "The first 5 on the list have a churn probability of 42%" in text
    assert table["customer_row"].is_monotonic_increasing  # all equal: by row number


def test_the_list_from_real_out_of_fold_scores():
    """The pieces together: out-of-fold scores of a small logistic pipeline, reasons for the
    customers who stayed, the list and its section."""
    customers = make_synthetic_customers(200, seed=4)
    columns = feature_columns(CFG.data)
    cfg = compose_config(overrides=["model=logreg", "features=engineered"])
    pipe = build_pipeline(cfg.features, cfg.model, columns)
    stayed = (customers["Churn"] == 0).to_numpy()
    oof = out_of_fold(pipe, customers[columns], customers["Churn"], 3, seed=0,
                      reason_rows=stayed, labels=OmegaConf.to_container(CFG.data.labels), n_jobs=1)
    table = call_list_table(customers, "Churn", oof, 0.4, np.zeros(len(customers), int),
                            {0: "everyone"}, CATALOGUE)
    assert len(table) == stayed.sum() and table["reason_1"].notna().mean() > 0.9
    assert not table["reason_1"].dropna().str.contains(r"\(\+").any()  # words, no model units
    section = who_to_call(table, 0.4, "a note")
    assert len(next(b for b in section.blocks if isinstance(b, Table)).frame) == 15
    assert section.numbers["at_risk"] == int((oof.proba[stayed] >= 0.4).sum())
