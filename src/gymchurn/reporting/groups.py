"""Sharper target groups: how quickly a new member's risk falls (churn by month of membership
for each contract length), and groups found from the data as readable rules over the raw
columns (the leaves of a shallow decision tree), ranked by how many leavers they hold.

A rule reads like a CRM filter: "contract length (months) ≤ 1 and months as a member ≤ 2".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def cohort_table(df: pd.DataFrame, target: str, tenure: str, contract: str,
                 max_month: int) -> pd.DataFrame:
    """Churn rate and customers by month of membership (0..max_month, the rest pooled as
    max_month+) for each contract length: rows are months, columns (contract, rate|n)."""
    month = df[tenure].clip(upper=max_month + 1)
    grouped = df.groupby([month, df[contract]])[target].agg(rate="mean", n="size")
    return grouped.unstack(contract).rename_axis(index="month")


def cohort_figure(table: pd.DataFrame, min_customers: int, label: str):
    """One line per contract length: churn rate by month of membership (months with at least
    `min_customers` customers)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    max_month = int(table.index.max()) - 1
    for contract in table["rate"].columns:
        keep = table[("n", contract)] >= min_customers
        ax.plot(table.index[keep], table[("rate", contract)][keep], marker="o",
                label=f"{contract}-month contract")
    ax.set_xlabel(f"month of membership ({max_month + 1} = {max_month + 1} or more)")
    ax.set_ylabel("churn rate")
    ax.set_title(label)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend()
    fig.tight_layout()
    return fig


def _condition(column: str, upper: float | None, lower: float | None, integer: bool,
               labels: Mapping[str, str], phrases: Mapping[str, Mapping[str, str]],
               binary: bool, observed: Sequence | None) -> str:
    """One column's bounds on a tree path in words (lower < x <= upper); a column with a few
    known values reads as those values ("contract length (months) is 6 or 12")."""
    if binary and column in phrases:
        return phrases[column]["low"] if upper is not None else phrases[column]["high"]
    name = labels.get(column, column)
    if observed is not None:
        inside = [v for v in observed if (lower is None or v > lower) and (upper is None or v <= upper)]
        return f"{name} {'is' if len(inside) > 1 else '='} {' or '.join(str(v) for v in inside)}"

    def show(v: float) -> str:
        return f"{int(np.floor(v))}" if integer else f"{v:.2f}"

    if integer:  # x <= 3.5 is x <= 3; x > 3.5 is x >= 4
        parts = ([f"{name} ≥ {int(np.floor(lower)) + 1}"] if lower is not None else []) + \
                ([f"{name} ≤ {show(upper)}"] if upper is not None else [])
        if lower is not None and upper is not None and int(np.floor(lower)) + 1 == int(np.floor(upper)):
            return f"{name} = {int(np.floor(upper))}"
        return " and ".join(parts)
    parts = ([f"{name} > {show(lower)}"] if lower is not None else []) + \
            ([f"{name} ≤ {show(upper)}"] if upper is not None else [])
    return " and ".join(parts)


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
    t = tree.tree_
    rows = []

    def walk(node: int, bounds: dict) -> None:
        if t.children_left[node] == -1:  # a leaf
            members = tree.apply(X) == node
            parts = []
            for column, (lower, upper) in bounds.items():
                rule = data_columns.get(column, {})
                values = list(rule.get("values") or [])
                observed = sorted(int(v) for v in X[column].unique()) if values else None
                parts.append(_condition(column, upper, lower, rule.get("kind") == "int", labels,
                                        phrases, values == [0, 1], observed))
            rows.append({"rule": " and ".join(parts) or "every customer",
                         "customers": int(members.sum()), "share": float(members.mean()),
                         "churn_rate": float(y[members].mean()),
                         "leavers": int(y[members].sum()), "conditions": len(parts),
                         "members": members})  # a boolean mask over the table's rows
            return
        column, cut = columns[t.feature[node]], float(t.threshold[node])
        lower, upper = bounds.get(column, (None, None))
        walk(t.children_left[node], {**bounds, column: (lower, cut if upper is None else min(upper, cut))})
        walk(t.children_right[node], {**bounds, column: (cut if lower is None else max(lower, cut), upper)})

    walk(0, {})
    table = pd.DataFrame(rows).sort_values(["leavers", "churn_rate"], ascending=False)
    return table.reset_index(drop=True)


def target_groups(df: pd.DataFrame, target: str, columns: Sequence[str], data_columns: Mapping,
                  labels: Mapping[str, str], phrases: Mapping, settings: Mapping, seed: int):
    """Section 5: the cohort curve and the rule groups, with the sentences they support."""
    from gymchurn.reporting.blocks import Section, frame_of

    section = Section("groups", "Who leaves: groups to target")
    tenure, contract = settings["tenure_column"], settings["contract_column"]
    cohorts = cohort_table(df, target, tenure, contract, int(settings["cohort_months"]))
    first = cohorts.loc[0, "rate"]
    settled = cohorts.loc[cohorts.index.max(), "rate"]
    months, lengths = labels.get(tenure, tenure), list(cohorts["rate"].columns)  # months: axis
    section.numbers.update({f"churn_month0_contract{c}": float(first[c]) for c in lengths})
    section.say(
        "How quickly a new member's risk falls, by contract length: in the first month "
        + ", ".join(f"{first[c]:.0%} of {c}-month members leave" for c in lengths)
        + f"; from month {int(cohorts.index.max())} of membership on: "
        + ", ".join(f"{settled[c]:.0%}" for c in lengths) + ".")
    section.figure("cohort_curve", f"Churn rate by {months} for each contract length.",
                   cohort_figure(cohorts, int(settings["min_customers"]),
                                 "Churn by month of membership"))
    groups = rule_groups(df, target, columns, int(settings["max_depth"]),
                         float(settings["min_share"]), seed, data_columns, labels, phrases)
    shown = groups.head(int(settings["show"]))
    top = shown.iloc[0]
    section.numbers.update(top_group_leavers=int(top.leavers), top_group_churn=float(top.churn_rate),
                           rule_groups=groups, first_month=dict(first), settled=dict(settled))
    section.say(
        f"Groups found from the data (the leaves of a decision tree of depth "
        f"{int(settings['max_depth'])} on the raw columns, each a filter a CRM can apply), the "
        f"most leavers first: \"{top.rule}\" holds {top.customers:,} customers "
        f"({top.share:.0%}), of whom {top.churn_rate:.0%} left: {top.leavers:,} of the "
        f"{int(df[target].sum()):,} leavers.")
    section.table("Target groups as rules, the most leavers first.", frame_of([{
        "group (rule)": r.rule, "customers": f"{r.customers:,}", "share": f"{r.share:.0%}",
        "churn": f"{r.churn_rate:.0%}", "leavers": f"{r.leavers:,}"}
        for r in shown.itertuples(index=False)]))
    return section
