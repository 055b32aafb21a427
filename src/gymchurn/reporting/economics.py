"""What a campaign is worth: per campaign size (the gains table) and per keep-rate scenario,
members kept and net value per 1,000 customers, and the keep rate at which calling pays.

Every money figure follows from three stated assumptions in conf/economics/ (gymchurn.economics):
what an offer costs per customer called, what a kept member pays per month, and for how many
months a kept member stays; the share of called leavers a measure keeps is a low / mid / high
scenario, because no campaign has been run yet to measure it.
"""

from __future__ import annotations

import pandas as pd

from gymchurn.economics import Assumptions, share_up

PER = 1000  # figures per this many customers, whatever the size of the table


def campaign_value(gains: pd.DataFrame, assumptions: Assumptions) -> pd.DataFrame:
    """One row per campaign size and scenario, per 1,000 customers: called, leavers reached,
    members kept, cost, value kept, net value; and the campaign's break-even keep rate."""
    a = assumptions
    rows = []
    for g in gains.itertuples(index=False):
        called = PER * g.share_contacted
        reached = called * g.precision
        # Calling pays when keep_rate x reached x value_kept >= called x offer_cost.
        break_even = (called * a.offer_cost / (reached * a.value_kept)
                      if reached and a.value_kept else float("inf"))
        for scenario, rate in a.keep_rates.items():
            kept = rate * reached
            rows.append({"share_contacted": g.share_contacted, "scenario": scenario,
                         "keep_rate": rate, "called": called, "leavers_reached": reached,
                         "members_kept": kept, "cost": called * a.offer_cost,
                         "value_kept": kept * a.value_kept,
                         "net_value": kept * a.value_kept - called * a.offer_cost,
                         "break_even_keep_rate": break_even})
    return pd.DataFrame(rows)


def economics_sentences(value: pd.DataFrame, assumptions: Assumptions) -> list[str]:
    """The assumptions, the best of the campaign sizes shown in the middle scenario, and the
    keep rate from which calling pays (rounded up: reaching the shown rate is enough)."""
    a = assumptions
    middle = a.middle
    mid = value[value["scenario"] == middle]
    best = mid.loc[mid["net_value"].idxmax()]
    text = [f"Assumed: an offer costs {a.money(a.offer_cost)} per customer called, a kept member "
            f"pays {a.money(a.monthly_fee)} a month and stays {a.months_kept:g} months more (worth "
            f"{a.money(a.value_kept)}); a measure keeps "
            + ", ".join(f"{r:.0%} ({s})" for s, r in a.keep_rates.items())
            + " of the leavers called. These are assumptions to set to the chain's own figures, "
            "not measurements: a pilot measures the keep rate."]
    if best.net_value > 0:
        text.append(f"In the {middle} scenario the best of these sizes calls the riskiest "
                    f"{best.share_contacted:.0%}: per {PER:,} customers it keeps about "
                    f"{best.members_kept:.0f} members and nets about "
                    f"{a.money(best.net_value, people=True)}.")
    else:
        text.append(f"In the {middle} scenario no campaign size pays for itself: the offer costs "
                    f"more than the members it keeps bring in.")
    # Rule: the sizes that share the lowest break-even are named together ("up to 20%").
    sizes = value.drop_duplicates("share_contacted").reset_index(drop=True)
    low = sizes["break_even_keep_rate"].min()
    cheap = sizes[sizes["break_even_keep_rate"] <= low + 1e-12]
    largest = sizes.iloc[-1]
    which = (f"the riskiest {cheap.share_contacted.iloc[0]:.0%}" if len(cheap) == 1 else
             f"up to the riskiest {cheap.share_contacted.iloc[-1]:.0%}")
    sentence = (f"Calling {which} pays once the measure keeps at least {share_up(low)} of the "
                "leavers called")
    if largest.break_even_keep_rate > low + 1e-12:
        sentence += (f"; calling {largest.share_contacted:.0%} needs "
                     f"{share_up(largest.break_even_keep_rate)}, because more of those calls reach "
                     "members who would have stayed anyway")
    text.append(sentence + ".")
    return text
