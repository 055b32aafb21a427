"""What a campaign is worth: every figure from the gains table and the stated assumptions."""

from __future__ import annotations

import pandas as pd
import pytest

from gymchurn.errors import GymchurnError
from gymchurn.reporting.economics import Assumptions, campaign_value, economics_sentences

GAINS = pd.DataFrame({"share_contacted": [0.1, 0.3], "precision": [0.9, 0.6]})
ASSUMED = Assumptions(offer_cost=15, monthly_fee=40, months_kept=3,
                      keep_rates={"low": 0.1, "mid": 0.2, "high": 0.3})


def test_campaign_value_follows_from_the_assumptions():
    value = campaign_value(GAINS, ASSUMED).set_index(["share_contacted", "scenario"])
    row = value.loc[(0.1, "mid")]
    # Per 1,000 customers: 100 called, 90 of them leavers, 20 % of those kept, 120 each.
    assert row.called == 100 and row.leavers_reached == pytest.approx(90)
    assert row.members_kept == pytest.approx(18) and row.cost == pytest.approx(1500)
    assert row.net_value == pytest.approx(18 * 120 - 1500)
    assert row.break_even_keep_rate == pytest.approx(1500 / (90 * 120))
    # A larger campaign reaches more stayers per call: it needs a higher keep rate to pay.
    assert value.loc[(0.3, "mid")].break_even_keep_rate > row.break_even_keep_rate


def test_the_sentences_follow_the_numbers():
    text = " ".join(economics_sentences(campaign_value(GAINS, ASSUMED), ASSUMED))
    assert "an offer costs 15 per customer called" in text and "worth 120" in text
    # mid: 10 % nets 18 x 120 - 1,500 = 660; 30 % nets 36 x 120 - 4,500 = -180
    assert "best of these sizes calls the riskiest 10%" in text and "nets about 660" in text
    # 1,500 / (90 x 120) = 13.9 %: shown rounded up, so reaching the shown rate always pays.
    assert "at least 14% of the leavers called" in text
    with_currency = Assumptions(15, 40, 3, {"low": 0.1, "mid": 0.2, "high": 0.3}, "$")
    text = " ".join(economics_sentences(campaign_value(GAINS, with_currency), with_currency))
    assert "an offer costs $15 per customer called" in text and "nets about $660" in text
    dear = Assumptions(offer_cost=500, monthly_fee=40, months_kept=3, keep_rates={"mid": 0.2})
    text = " ".join(economics_sentences(campaign_value(GAINS, dear), dear))
    assert "no campaign size pays for itself" in text


@pytest.mark.parametrize("bad", [
    {"offer_cost": 15, "monthly_fee": 40, "months_kept": 3},                       # no rates
    {"offer_cost": "x", "monthly_fee": 40, "months_kept": 3, "keep_rates": {"m": 0.2}},
    {"offer_cost": 15, "monthly_fee": 40, "months_kept": 3, "keep_rates": {"m": 1.5}},
    {"offer_cost": -1, "monthly_fee": 40, "months_kept": 3, "keep_rates": {"m": 0.2}},
])
def test_bad_assumptions_are_one_clear_error(bad):
    with pytest.raises(GymchurnError, match="economics"):
        Assumptions.from_config(bad)
