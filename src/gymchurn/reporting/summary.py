"""Page one, for the head of customer relations: five findings in plain words, the target
groups (who, how many now, their churn, the action, the expected effect under the stated
assumptions) and the caveats in one paragraph. Every figure comes from a section built from the
data; this module only chooses and words them, rounded for people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gymchurn.economics import about, money, share_up
from gymchurn.reporting.blocks import Section, frame_of


def people(x: float) -> str:
    """A number of members for people: whole, and "under 1" rather than 0.3."""
    return "under 1" if 0 < x < 0.5 else about(x)


@dataclass
class PageOne:
    """What page one quotes, each computed by its section."""

    n_customers: int
    n_left: int
    first_month: dict        # contract length -> churn in the first month of membership
    settled: dict            # contract length -> churn from the last cohort month on
    settled_month: int
    drivers: Sequence[str]   # the model's top drivers, plain names, strongest first
    gains: pd.DataFrame      # share_contacted, share_of_leavers, precision (holdout)
    middle: str              # the keep-rate scenario decisions use
    best_share: float
    best_kept: float
    best_net: float
    break_even_keep_rate: float
    active: int              # customers still active (the call list)
    at_risk: int             # of them, at or above the threshold
    worth_calling: int       # of them, at or above the risk from which a call pays
    groups: pd.DataFrame     # target groups: rule, customers, active, churn_rate, leavers,
                             # action, kept, net (see target_group_table)
    caveats: Sequence[str]   # one short clause each
    currency: str = ""       # before money figures


def target_group_table(rule_groups: pd.DataFrame, y: np.ndarray, oof_proba: np.ndarray,
                       actions: Sequence[str], assumptions, n_groups: int) -> pd.DataFrame:
    """The page-one groups: the rule groups with churn above the table's rate, the most
    leavers first, at most `n_groups`; each with its active members (who stayed) and the
    expected effect, in the middle scenario, of calling those whom a call pays for (out-of-fold
    churn probability at least the break-even one): kept = keep rate x the sum of their
    probabilities; net = kept x member value - calls x offer cost. `actions`: the first
    measure's action for each of these groups (same order)."""
    y = np.asarray(y)
    chosen = rule_groups[rule_groups["churn_rate"] > y.mean()].head(n_groups).reset_index(drop=True)
    keep = assumptions.keep_rates[assumptions.middle]
    pays_from = assumptions.break_even_probability()
    rows = []
    for g, action in zip(chosen.itertuples(index=False), actions, strict=False):
        active = np.asarray(g.members) & (y == 0)
        worth = active & (oof_proba >= pays_from)
        kept = keep * float(oof_proba[worth].sum())
        rows.append({"rule": g.rule, "customers": g.customers, "active": int(active.sum()),
                     "churn_rate": g.churn_rate, "leavers": g.leavers, "action": action,
                     "worth_calling": int(worth.sum()), "kept": kept,
                     "net": kept * assumptions.value_kept - worth.sum() * assumptions.offer_cost,
                     "members": g.members})
    return pd.DataFrame(rows)


def page_one(p: PageOne) -> Section:
    section = Section("summary", "Summary for the head of customer relations")
    section.numbers.update(n_left=p.n_left, at_risk=p.at_risk, active=p.active,
                           target_groups=len(p.groups))
    rate = p.n_left / p.n_customers
    held = int(p.groups["leavers"].sum()) if len(p.groups) else 0
    findings = [
        f"**{p.n_left:,} of {p.n_customers:,} customers ({rate:.0%}) left this month**, and "
        f"they are concentrated: the {len(p.groups)} groups below hold {held:,} of them "
        f"({held / max(p.n_left, 1):.0%})."]
    lengths = sorted(p.first_month)
    short, long_ = lengths[0], lengths[-1]
    findings.append(
        f"**New members on short contracts leave first.** In their first month (0 full months as "
        f"a member) {p.first_month[short]:.0%} of {short}-month members leave, against "
        f"{p.first_month[long_]:.0%} on {long_}-month contracts; after {p.settled_month} or more "
        f"months as a member, {p.settled[short]:.0%} and {p.settled[long_]:.0%}.")
    findings.append("**What predicts leaving most** (the model's own ranking): "
                    + ", ".join(p.drivers) + ".")
    near = p.gains.iloc[int((p.gains["share_contacted"] - 0.1).abs().argmin())]
    last = p.gains.iloc[-1]
    findings.append(
        f"**Whom to call.** In a month like this one, calling the riskiest "
        f"{near.share_contacted:.0%} of all members reaches {near.share_of_leavers:.0%} of those "
        f"who would leave ({near.precision:.0%} of the calls reach a leaver); calling "
        f"{last.share_contacted:.0%} reaches {last.share_of_leavers:.0%}. Of the {p.active:,} "
        f"customers still active, {p.at_risk:,} are at risk now, and in the {p.middle} scenario "
        f"a call pays for the riskiest {p.worth_calling:,}: call them first. call_list.csv ranks "
        "everyone, with reasons and an action.")
    findings.append(
        f"**What it is worth.** In the {p.middle} scenario (assumptions in section 2), the best "
        f"of the campaign sizes shown calls the riskiest {p.best_share:.0%} of a month's members: "
        f"per 1,000 members it keeps about {people(p.best_kept)} and nets about "
        f"{money(p.best_net, p.currency, people=True)}. Calling pays once a measure keeps at least "
        f"{share_up(p.break_even_keep_rate)} of the leavers called; a pilot measures that.")
    for finding in findings:
        section.say(finding)
    if len(p.groups):
        section.table("Target groups, the most leavers first: who (a rule a CRM can filter), how "
                      f"many are still active, their churn, the action, and the expected effect of "
                      f"calling the active members whom a call pays for ({p.middle} scenario).",
                      frame_of([{
                          "group": f"G{i + 1}", "who": g.rule, "customers": f"{g.customers:,}",
                          "still active": f"{g.active:,}", "churn": f"{g.churn_rate:.0%}",
                          "action": g.action,
                          "calling those it pays for": f"call {g.worth_calling:,}, keep "
                                                       f"{'about ' if g.kept >= 0.5 else ''}"
                                                       f"{people(g.kept)}, net about "
                                                       f"{money(g.net, p.currency, people=True)}"}
                          for i, g in enumerate(p.groups.itertuples(index=False))]))
    section.say("**Caveats.** " + " ".join(p.caveats))
    return section
