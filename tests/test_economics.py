"""What a call costs and a kept member is worth (conf/economics/): the break-even probability,
and the churn threshold that follows from it (threshold.rule=cost)."""

from __future__ import annotations

import numpy as np
import pytest

from gymchurn.churn.evaluate import choose_threshold
from gymchurn.churn.fit import threshold_cost_ratio
from gymchurn.config import compose_config as composed
from gymchurn.economics import Assumptions
from gymchurn.errors import GymchurnError

MID = {"offer_cost": 15, "monthly_fee": 40, "months_kept": 3,
       "keep_rates": {"low": 0.1, "mid": 0.2, "high": 0.3}}


def net_value(y, proba, threshold, a: Assumptions) -> float:
    """Direct: every flagged customer costs an offer; every flagged leaver is kept at the
    middle keep rate and brings the member value."""
    flagged = proba >= threshold
    kept = a.keep_rates[a.middle] * np.sum(flagged & (y == 1))
    return kept * a.value_kept - a.offer_cost * flagged.sum()


def test_the_cost_threshold_from_economics_maximises_the_campaign_net_value():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.3).astype(int)
    proba = np.clip(0.2 + 0.5 * y + rng.normal(0, 0.2, 500), 0, 1).round(3)
    a = Assumptions.from_config(MID)
    threshold = choose_threshold(y, proba, "cost", a.cost_ratio())
    best = max(net_value(y, proba, t, a) for t in np.r_[np.unique(proba), 1.01])
    assert net_value(y, proba, threshold, a) == pytest.approx(best)
    # A dearer offer flags fewer customers.
    dear = Assumptions.from_config({**MID, "offer_cost": 20})
    assert choose_threshold(y, proba, "cost", dear.cost_ratio()) >= threshold


def test_break_even_probability_and_ratio_follow_the_middle_scenario():
    a = Assumptions.from_config(MID)
    assert a.middle == "mid"
    assert a.break_even_probability() == pytest.approx(15 / (0.2 * 40 * 3))
    assert a.cost_ratio() == pytest.approx(0.2 * 120 / 15 - 1)
    assert a.cost_ratio("high") == pytest.approx(0.3 * 120 / 15 - 1)


@pytest.mark.parametrize("change, says", [
    ({"offer_cost": 30}, "calling never pays"),
    ({"offer_cost": 0}, "offer_cost above 0"),
])
def test_economics_where_calling_never_pays_are_refused_for_the_cost_rule(change, says):
    with pytest.raises(GymchurnError, match=says):
        Assumptions.from_config({**MID, **change}).cost_ratio()


def test_the_experiment_takes_its_cost_ratio_from_economics_unless_given():
    assert threshold_cost_ratio(composed("config", [])) is None  # rule f1
    derived = composed("config", ["threshold.rule=cost"])
    assert threshold_cost_ratio(derived) == pytest.approx(0.6)
    given = composed("config", ["threshold.rule=cost", "threshold.cost_ratio=5"])
    assert threshold_cost_ratio(given) == 5.0
    with pytest.raises(GymchurnError, match="calling never pays"):
        threshold_cost_ratio(composed("config", ["threshold.rule=cost", "economics.offer_cost=100"]))
