"""How many customers to call: contacting the riskiest share of customers reaches what share of
the leavers, at what precision (a gains table), measured on customers the model never saw.

The department sizes a campaign from this: "calling the riskiest 10 % reaches 45 % of the
leavers, and 90 % of those called would leave".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gymchurn.errors import GymchurnError


def check_shares(shares: Sequence[float]) -> list[float]:
    """The contact shares as sorted fractions in (0, 1], or one clear error."""
    try:
        values = sorted(float(s) for s in shares)
    except (TypeError, ValueError):
        raise GymchurnError(f"capacity_shares must be a list of fractions such as [0.05, 0.1], "
                            f"got {shares!r}.") from None
    if not values or values[0] <= 0 or values[-1] > 1:
        raise GymchurnError(f"capacity_shares must be fractions above 0 and at most 1 (0.1 = "
                            f"the riskiest 10 % of customers), got {list(shares)}.")
    return values


def gains_table(y_true, proba, shares: Sequence[float]) -> pd.DataFrame:
    """One row per share: customers contacted (the riskiest first), leavers among them, the
    share of all leavers they are (recall), precision, and lift over calling at random."""
    y_sorted = np.asarray(y_true, dtype=int)[np.argsort(-np.asarray(proba), kind="stable")]
    n, leavers = len(y_sorted), int(y_sorted.sum())
    if n == 0 or leavers == 0:
        raise GymchurnError("the gains table needs customers who left among those scored.")
    rows = []
    for share in check_shares(shares):
        contacted = max(1, round(share * n))
        reached = int(y_sorted[:contacted].sum())
        rows.append({"share_contacted": share, "contacted": contacted, "leavers_reached": reached,
                     "share_of_leavers": reached / leavers, "precision": reached / contacted,
                     "lift": (reached / contacted) / (leavers / n)})
    return pd.DataFrame(rows)


def gains_figure(y_true, proba, table: pd.DataFrame):
    """Cumulative gains: share of leavers reached against share of customers contacted."""
    import matplotlib.pyplot as plt

    y_sorted = np.asarray(y_true, dtype=int)[np.argsort(-np.asarray(proba), kind="stable")]
    contacted = np.arange(len(y_sorted) + 1) / len(y_sorted)
    reached = np.r_[0, np.cumsum(y_sorted)] / y_sorted.sum()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(contacted, reached, label="the riskiest first (the model)")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="at random")
    ax.scatter(table["share_contacted"], table["share_of_leavers"], zorder=3)
    for row in table.itertuples(index=False):
        ax.annotate(f"{row.share_of_leavers:.0%}", (row.share_contacted, row.share_of_leavers),
                    textcoords="offset points", xytext=(6, -12))
    ax.set_xlabel("share of customers contacted")
    ax.set_ylabel("share of leavers reached")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def capacity_sentence(table: pd.DataFrame) -> str:
    """The gains table in words, at the share nearest 10 % and at the largest share."""
    near = table.iloc[int((table["share_contacted"] - 0.1).abs().argmin())]
    last = table.iloc[-1]
    text = (f"Calling the riskiest {near.share_contacted:.0%} of customers ({int(near.contacted):,} "
            f"here) would reach {near.share_of_leavers:.0%} of those who leave, and "
            f"{near.precision:.0%} of the customers called would leave without action "
            f"({near.lift:.1f} times as many as calling at random).")
    if last.share_contacted != near.share_contacted:
        text += (f" Calling {last.share_contacted:.0%} reaches {last.share_of_leavers:.0%} of "
                 f"them, with {last.precision:.0%} of the calls on leavers.")
    return text


def campaign_section(y_test, proba, shares: Sequence[float], assumptions,
                     threshold_note: str = ""):
    """How many to call (gains on the holdout) and what each campaign size is worth under the
    stated assumptions (gymchurn.economics), with which threshold the flag uses and why."""
    from gymchurn.economics import share_up
    from gymchurn.reporting.blocks import Section, frame_of
    from gymchurn.reporting.economics import PER, campaign_value, economics_sentences

    section = Section("campaign", "How many to call, and what it is worth")
    gains = gains_table(y_test, proba, shares)
    section.numbers.update({f"leavers_reached_top_{round(100 * r.share_contacted)}pct":
                            r.share_of_leavers for r in gains.itertuples(index=False)})
    section.numbers["gains"] = gains
    section.say(capacity_sentence(gains) + " Measured on customers the model never saw, before "
                "the month's outcome (leavers and stayers alike): the shares are of a month's "
                "whole customer base; use them to size a campaign.")
    value = campaign_value(gains, assumptions)
    middle = assumptions.middle
    rows = []
    for g in gains.itertuples(index=False):
        mine = value[value["share_contacted"] == g.share_contacted].set_index("scenario")
        rows.append({"riskiest called": f"{g.share_contacted:.0%}",
                     "leavers reached": f"{g.share_of_leavers:.0%}",
                     "calls on leavers": f"{g.precision:.0%}",
                     f"kept per {PER:,} ({middle})": f"{mine.loc[middle, 'members_kept']:.0f}",
                     **{f"net, {s}": assumptions.money(mine.loc[s, "net_value"]) for s in mine.index},
                     "pays from keep rate": share_up(mine["break_even_keep_rate"].iloc[0])})
    section.table(f"Calling the riskiest customers first: leavers reached and what the campaign "
                  f"is worth per {PER:,} customers under the assumptions below.",
                  frame_of(rows))
    for sentence in economics_sentences(value, assumptions):
        section.say(sentence)
    mid = value[value["scenario"] == middle]
    best = mid.loc[mid["net_value"].idxmax()]
    section.numbers.update(break_even_keep_rate=float(value["break_even_keep_rate"].min()),
                           best_share=float(best.share_contacted),
                           best_kept=float(best.members_kept), best_net=float(best.net_value))
    if threshold_note:
        section.say(threshold_note)
    section.figure("gains", "Share of leavers reached by calling the riskiest customers first "
                   "(holdout).", gains_figure(y_test, proba, gains))
    return section
