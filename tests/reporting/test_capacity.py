"""How many to call: the gains table against a direct count, and its sentences follow the data."""

from __future__ import annotations

import numpy as np
import pytest

from gymchurn.errors import GymchurnError
from gymchurn.reporting.capacity import capacity_sentence, check_shares, gains_table


def scored(n: int = 1000, signal: float = 3.0, seed: int = 0):
    """Customers with a churn outcome and a risk score that ranks them `signal`-well."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    proba = 1 / (1 + np.exp(-(signal * y + rng.normal(size=n) - signal / 2)))
    return y.astype(int), proba


def test_gains_table_counts_the_riskiest_customers_directly():
    y, proba = scored()
    table = gains_table(y, proba, [0.3, 0.05, 0.1])  # any order in, sorted out
    assert table["share_contacted"].tolist() == [0.05, 0.1, 0.3]
    order = np.argsort(-proba)
    for row in table.itertuples(index=False):
        k = round(row.share_contacted * len(y))
        reached = y[order[:k]].sum()
        assert row.contacted == k and row.leavers_reached == reached
        assert row.share_of_leavers == pytest.approx(reached / y.sum())
        assert row.precision == pytest.approx(reached / k)
        assert row.lift == pytest.approx((reached / k) / y.mean())


def test_the_sentence_follows_how_well_the_model_ranks():
    sharp = gains_table(*scored(signal=6.0), [0.1, 0.3])
    blunt = gains_table(*scored(signal=0.0), [0.1, 0.3])  # a score that knows nothing
    assert sharp.loc[0, "share_of_leavers"] > 0.35 > blunt.loc[0, "share_of_leavers"]
    assert blunt.loc[0, "lift"] == pytest.approx(1, abs=0.35)
    for table in (sharp, blunt):
        text = capacity_sentence(table)
        row = table.iloc[0]
        assert f"riskiest 10% of customers ({int(row.contacted):,} here)" in text
        assert f"reach {row.share_of_leavers:.0%} of those who leave" in text
        assert f"Calling 30% reaches {table.iloc[1].share_of_leavers:.0%}" in text


@pytest.mark.parametrize("shares", [[], [0], [0.1, 1.5], ["ten"], [-0.1]])
def test_campaign_sizes_must_be_fractions(shares):
    with pytest.raises(GymchurnError, match="capacity_shares"):
        check_shares(shares)
