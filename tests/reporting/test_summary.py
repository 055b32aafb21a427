"""Page one: the findings, the target groups and their expected effect, against direct
computations; the words follow the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.economics import Assumptions
from gymchurn.reporting.blocks import Table
from gymchurn.reporting.summary import PageOne, about, page_one, target_group_table

ECONOMICS = Assumptions.from_config({"offer_cost": 15, "monthly_fee": 40, "months_kept": 3,
                                     "keep_rates": {"low": 0.1, "mid": 0.2, "high": 0.3}})


def groups_and_outcomes():
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(int)
    proba = rng.random(200)  # some active members above the break-even risk
    masks = [np.arange(200) < 50, (np.arange(200) >= 50) & (np.arange(200) < 120),
             np.arange(200) >= 120]
    y[:50] = (rng.random(50) < 0.8)  # the first group leaves most, the second often
    y[50:120] = (rng.random(70) < 0.45)
    y[120:] = (rng.random(80) < 0.05)
    rules = pd.DataFrame([{"rule": f"rule {i}", "customers": int(m.sum()),
                           "churn_rate": float(y[m].mean()), "leavers": int(y[m].sum()),
                           "members": m} for i, m in enumerate(masks)])
    return rules.sort_values("leavers", ascending=False).reset_index(drop=True), y, proba


def test_target_groups_keep_riskier_than_average_groups_and_their_expected_effect():
    rules, y, proba = groups_and_outcomes()
    table = target_group_table(rules, y, proba, ["call", "offer", "visit"], ECONOMICS, 2)
    above = rules[rules["churn_rate"] > y.mean()].head(2)
    assert table["rule"].tolist() == above["rule"].tolist()
    for row, members in zip(table.itertuples(), above["members"], strict=True):
        active = members & (y == 0)
        worth = active & (proba >= 15 / (0.2 * 120))  # a call pays from this risk
        assert row.active == active.sum() and row.worth_calling == worth.sum() > 0
        assert row.kept == pytest.approx(0.2 * proba[worth].sum())
        assert row.net == pytest.approx(row.kept * 120 - 15 * worth.sum())


def page(groups, n_left=300, first=(0.9, 0.2)):
    gains = pd.DataFrame({"share_contacted": [0.1, 0.3], "share_of_leavers": [0.4, 0.95],
                          "precision": [1.0, 0.84]})
    return page_one(PageOne(
        n_customers=1000, n_left=n_left, first_month={1: first[0], 12: first[1]},
        settled={1: 0.1, 12: 0.01}, settled_month=7, drivers=["visits this month", "age"],
        gains=gains, middle="mid", best_share=0.2, best_kept=41.3, best_net=1813.0,
        break_even_keep_rate=0.125, active=700, at_risk=120, worth_calling=45, groups=groups,
        caveats=["One caveat.", "Another."], currency="$"))


def test_page_one_says_the_five_findings_from_its_numbers():
    rules, y, proba = groups_and_outcomes()
    groups = target_group_table(rules, y, proba, ["call", "offer"], ECONOMICS, 2)
    section = page(groups)
    text = section.sentences
    held = int(groups["leavers"].sum())
    assert text[0].startswith("**300 of 1,000 customers (30%) left this month**")
    assert f"hold {held:,} of them ({held / 300:.0%})" in text[0]
    assert "90% of 1-month members leave, against 20% on 12-month" in text[1]
    assert "after 7 or more months as a member, 10% and 1%" in text[1]
    assert text[2].endswith("visits this month, age.")
    assert "riskiest 10% of all members reaches 40%" in text[3] and "120 are at risk" in text[3]
    assert "a call pays for the riskiest 45: call them first" in text[3]
    assert "keeps about 41 and nets about $1,800" in text[4]
    assert "keeps at least 13% of the leavers" in text[4]  # 12.5 %, rounded up: enough to pay
    assert text[-1] == "**Caveats.** One caveat. Another."
    assert len(groups) == 2
    table = next(b for b in section.blocks if isinstance(b, Table)).frame
    assert table["who"].tolist() == groups["rule"].tolist()
    assert table["action"].tolist() == ["call", "offer"]
    # A different table, different words.
    assert "95% of 1-month members" in page(groups, first=(0.95, 0.2)).sentences[1]


@pytest.mark.parametrize(("x", "shown"), [(41.3, "41"), (1813, "1,800"), (-1249, "-1,200"),
                                          (123456, "120,000")])
def test_figures_are_rounded_for_people(x, shown):
    assert about(x) == shown
