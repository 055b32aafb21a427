"""Sharper target groups: how quickly a new member's risk falls (churn by months as a member
for each contract length), and groups found from the data as readable rules over the raw
columns (the leaves of a shallow decision tree), ranked by how many leavers they hold.

A rule reads like a CRM filter: "contract length (months) ≤ 1 and months as a member ≤ 2".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.reporting.blocks import Section, frame_of
from gymchurn.rules import leaf_bounds, rule_words


def cohort_table(df: pd.DataFrame, target: str, tenure: str, contract: str,
                 max_month: int) -> pd.DataFrame:
    """Churn rate and customers by month of membership (0..max_month, the rest pooled as
    max_month+) for each contract length: rows are months, columns (contract, rate|n)."""
    month = df[tenure].clip(upper=max_month + 1)
    grouped = df.groupby([month, df[contract]])[target].agg(rate="mean", n="size")
    return grouped.unstack(contract).rename_axis(index="month")


def cohort_figure(table: pd.DataFrame, min_customers: int, label: str,
                  months: str = "months as a member"):
    """One line per contract length: churn rate by months as a member (`months`: its plain
    name; months with at least `min_customers` customers)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    max_month = int(table.index.max()) - 1
    for contract in table["rate"].columns:
        keep = table[("n", contract)] >= min_customers
        ax.plot(table.index[keep], table[("rate", contract)][keep], marker="o",
                label=f"{contract}-month contract")
    ax.set_xlabel(f"{months} ({max_month + 1} = {max_month + 1} or more)")
    ax.set_ylabel("churn rate")
    ax.set_title(label)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend()
    fig.tight_layout()
    return fig


def rule_groups(df: pd.DataFrame, target: str, columns: Sequence[str], max_depth: int,
                min_share: float, seed: int, data_columns: Mapping,
                labels: Mapping[str, str], phrases: Mapping) -> pd.DataFrame:
    """The leaves of a shallow decision tree fitted to churn on the raw columns, as rules in
    words with their customers, share, churn rate, leavers and members (a boolean mask), the
    most leavers first."""
    from sklearn.tree import DecisionTreeClassifier

    X, y = df[list(columns)], df[target].astype(int)
    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed,
                                  min_samples_leaf=max(1, int(min_share * len(df)))).fit(X, y)
    leaf = tree.apply(X)
    rows = []
    for node, bounds in leaf_bounds(tree, list(columns)).items():
        members = leaf == node
        parts = rule_words(bounds, X, data_columns, labels, phrases)
        rows.append({"rule": " and ".join(parts) or "every customer",
                     "customers": int(members.sum()), "share": float(members.mean()),
                     "churn_rate": float(y[members].mean()),
                     "leavers": int(y[members].sum()), "conditions": len(parts),
                     "members": members})  # a boolean mask over the table's rows
    table = pd.DataFrame(rows).sort_values(["leavers", "churn_rate"], ascending=False)
    return table.reset_index(drop=True)


def target_labels(groups: pd.DataFrame, churn_rate: float, n_targets: int) -> list[str]:
    """The page-one names of the rule groups (`rule_groups` order): "G1", "G2", ... for the
    groups whose churn is above the table's `churn_rate`, the most leavers first, at most
    `n_targets`; "" for the others."""
    above = np.flatnonzero(groups["churn_rate"].to_numpy() > churn_rate)[:max(n_targets, 0)]
    names = [""] * len(groups)
    for i, row in enumerate(above):
        names[row] = f"G{i + 1}"
    return names


def target_groups(df: pd.DataFrame, target: str, columns: Sequence[str], data_columns: Mapping,
                  labels: Mapping[str, str], phrases: Mapping, settings: Mapping, seed: int,
                  n_targets: int) -> Section:
    """Section 5: the cohort curve and the rule groups, with the sentences they support; the
    table names the `n_targets` target groups of page one G1, G2, ... (`target_labels`)."""
    section = Section("groups", "Who leaves: groups to target")
    tenure, contract = settings["tenure_column"], settings["contract_column"]
    cohorts = cohort_table(df, target, tenure, contract, int(settings["cohort_months"]))
    first = cohorts.loc[0, "rate"]
    last_month = int(cohorts.index.max())  # the pooled last row: this many months or more
    settled = cohorts.loc[last_month, "rate"]
    months, lengths = labels.get(tenure, tenure), list(cohorts["rate"].columns)  # months: axis
    section.numbers.update({f"churn_month0_contract{c}": float(first[c]) for c in lengths})
    # Months count as the data does: the first month is 0 months as a member, and the pooled
    # last row is the members with `last_month` or more months behind them.
    section.say(
        f"How quickly a new member's risk falls, by contract length: in their first month (0 "
        f"{months}) " + ", ".join(f"{first[c]:.0%} of {c}-month members leave" for c in lengths)
        + f"; after {last_month} or more {months}: "
        + ", ".join(f"{settled[c]:.0%}" for c in lengths) + ".")
    section.figure("cohort_curve", f"Churn rate by {months} for each contract length.",
                   cohort_figure(cohorts, int(settings["min_customers"]),
                                 f"Churn by {months}", months))
    groups = rule_groups(df, target, columns, int(settings["max_depth"]),
                         float(settings["min_share"]), seed, data_columns, labels, phrases)
    churn_rate = float(df[target].mean())
    groups.insert(0, "group", target_labels(groups, churn_rate, n_targets))
    named = groups["group"] != ""
    # The table: the first `show` groups, and every target group even if it comes later.
    shown = groups[(groups.index < int(settings["show"])) | named]
    top = shown.iloc[0]
    section.numbers.update(top_group_leavers=int(top.leavers), top_group_churn=float(top.churn_rate),
                           rule_groups=groups, first_month=dict(first), settled=dict(settled))
    section.say(
        f"Groups found from the data (the leaves of a decision tree of depth "
        f"{int(settings['max_depth'])} on the raw columns, each a filter a CRM can apply), the "
        f"most leavers first: \"{top.rule}\" holds {top.customers:,} customers "
        f"({top.share:.0%}), of whom {top.churn_rate:.0%} left: {top.leavers:,} of the "
        f"{int(df[target].sum()):,} leavers.")
    # Rule: the selection of page one's target groups, stated with its numbers.
    if named.any():
        last = groups.loc[named, "group"].iloc[-1]
        section.say(
            f"The target groups G1{'' if last == 'G1' else '-' + last} on page one are the groups "
            f"whose churn is above the table's {churn_rate:.0%}, the most leavers first, at most "
            f"{n_targets}; together they hold {int(groups.loc[named, 'leavers'].sum()):,} of the "
            f"{int(df[target].sum()):,} leavers.")
    else:
        section.say(f"No group churns more than the table's {churn_rate:.0%}, so none is a target "
                    "group.")
    section.table("Groups as rules, the most leavers first (G1...: the target groups of page one).",
                  frame_of([{"group": r.group, "rule": r.rule, "customers": f"{r.customers:,}",
                             "share": f"{r.share:.0%}", "churn": f"{r.churn_rate:.0%}",
                             "leavers": f"{r.leavers:,}"} for r in shown.itertuples(index=False)]))
    return section
