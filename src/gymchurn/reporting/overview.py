"""Section 1, the data at a glance: churn rate, how churned and staying customers differ,
churn by each binary and contract feature, strongly correlated pairs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.plots import plt
from gymchurn.reporting.blocks import (
    CHURNED,
    STAYED,
    Section,
    categorical_columns,
    frame_of,
    pct,
)
from gymchurn.segments.portraits import standardised_differences


def data_overview(customers: pd.DataFrame, target: str, columns: Mapping,
                  strong_correlation: float = 0.7) -> Section:
    section = Section("data", "Data at a glance")
    features = [c for c in columns if c != target and c in customers]
    churn = customers[target]
    n, churned = len(customers), int(churn.sum())
    section.numbers.update(n_customers=n, n_churned=churned, churn_rate=churned / n)
    section.say(f"The table holds {n:,} customers with {len(features)} features each; "
                f"{churned:,} of them ({pct(churned / n)}) left this month.")

    differences = standardised_differences(customers[features], churn.to_numpy())
    gap = differences.loc[1] if 1 in differences.index else pd.Series(0.0, index=features)
    means = customers.groupby(target)[features].mean()
    rows = [{"feature": c, "mean, stayed": means.loc[0, c] if 0 in means.index else np.nan,
             "mean, churned": means.loc[1, c] if 1 in means.index else np.nan,
             "difference (std. units)": gap[c]}
            for c in gap.abs().sort_values(ascending=False).index]
    section.table("Each feature's mean for customers who stayed and who churned, largest "
                  "standardised difference first.",
                  frame_of(rows, {"mean, stayed": ".2f", "mean, churned": ".2f",
                                  "difference (std. units)": "+.2f"}))
    top = gap.abs().sort_values(ascending=False).index[:3]
    section.numbers["largest_differences"] = list(top)
    # Rule: name the three features whose means differ most (in standard deviations).
    section.say("Churned and staying customers differ most in " + "; ".join(
        f"{c} ({means.loc[1, c]:.2f} against {means.loc[0, c]:.2f})"
        for c in top if 0 in means.index and 1 in means.index) + ".")
    section.figure("distributions", "Distribution of each feature, stayed vs churned (densities).",
                   distributions_figure(customers, features, target))

    rate_rows = []
    for column in categorical_columns({c: columns[c] for c in features}):
        for value, group in customers.groupby(column)[target]:
            rate_rows.append({"feature": column, "value": value, "customers": len(group),
                              "churn rate": group.mean()})
    rates = pd.DataFrame(rate_rows)
    section.numbers["churn_by_value"] = {(r["feature"], int(r["value"])): float(r["churn rate"])
                                         for r in rate_rows}
    section.table("Churn rate by each binary and contract feature.",
                  frame_of(rate_rows, {"customers": ",d", "churn rate": "pct"}))
    if len(rates):
        section.figure("churn_by_feature", "Churn rate by value of each binary and contract "
                       "feature (bar labels: customers).", churn_rate_figure(rates))

    corr = customers[[*features, target]].corr()
    pairs = strong_pairs(customers, features, strong_correlation)
    section.numbers["strong_pairs"] = pairs
    section.figure("correlations", "Correlation between every pair of columns (Pearson r).",
                   correlation_figure(corr))
    # Rule: pairs with |r| >= the configured strength are called out as near duplicates.
    if pairs:
        section.say(
            f"Strongly correlated pairs (|r| ≥ {strong_correlation:g}): " + "; ".join(
                f"{a} and {b} (r = {r:.2f})" for a, b, r in pairs)
            + ". Each pair carries nearly the same information: read their importances together."
        )
    else:
        section.say(f"No two features are strongly correlated (all |r| < {strong_correlation:g}).")
    return section


def strong_pairs(customers: pd.DataFrame, features: Sequence[str],
                 strong_correlation: float = 0.7) -> list[tuple[str, str, float]]:
    """Pairs of features with |Pearson r| >= `strong_correlation`: near duplicates."""
    corr = customers[list(features)].corr()
    return [(a, b, float(corr.loc[a, b])) for i, a in enumerate(features) for b in features[i + 1:]
            if abs(corr.loc[a, b]) >= strong_correlation]


def distributions_figure(customers: pd.DataFrame, features: Sequence[str], target: str) -> plt.Figure:
    cols = 4
    rows = int(np.ceil(len(features) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows))
    for ax, column in zip(np.ravel(axes), features, strict=False):
        values = customers[column]
        bins = 25
        if values.nunique() <= 12:  # few values: one bar per value, ticked at the values
            distinct = np.unique(values)
            bins = np.append(distinct, distinct[-1] + 1) - 0.5
            ax.set_xticks(distinct)
        for label, colour, name in ((0, STAYED, "stayed"), (1, CHURNED, "churned")):
            ax.hist(values[customers[target] == label], bins=bins, density=True, alpha=0.55,
                    color=colour, label=name)
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in np.ravel(axes)[len(features):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def churn_rate_figure(rates: pd.DataFrame) -> plt.Figure:
    features = list(dict.fromkeys(rates["feature"]))
    fig, axes = plt.subplots(1, len(features), figsize=(2.1 * len(features) + 1, 3.2), sharey=True)
    for ax, feature in zip(np.atleast_1d(axes), features, strict=True):
        part = rates[rates["feature"] == feature]
        bars = ax.bar(part["value"].astype(str), part["churn rate"], color=CHURNED)
        ax.bar_label(bars, [f"{n:,}" for n in part["customers"]], fontsize=7)
        ax.set_title(feature, fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("churn rate")
    fig.tight_layout()
    return fig


def correlation_figure(corr: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 7.5))
    image = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(corr)):
        for j in range(len(corr)):
            ax.text(j, i, f"{corr.iat[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(corr)), corr.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(corr)), corr.index, fontsize=7)
    fig.colorbar(image, ax=ax, label="Pearson r")
    fig.tight_layout()
    return fig
