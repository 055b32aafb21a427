"""Portraits: what sets each segment apart (standardised differences), generated names, the
portrait table over every customer column."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gymchurn.tables import markdown_table


def standardised_differences(customers: pd.DataFrame, labels) -> pd.DataFrame:
    """Segments x columns: (segment mean - mean of everyone else) / column's overall std.

    How many standard deviations a segment sits from the rest on each column: the measure of
    what sets a segment apart, comparable across columns measured in different units.
    """
    labels = np.asarray(labels)
    std = customers.std(ddof=0).replace(0, np.nan)
    rows = {}
    for segment in np.unique(labels):
        inside = labels == segment
        rest = customers[~inside].mean() if (~inside).any() else customers.mean()
        rows[int(segment)] = ((customers[inside].mean() - rest) / std).fillna(0.0)
    return pd.DataFrame(rows).T.rename_axis("segment")


def phrase(column: str, difference: float, phrases: Mapping) -> str:
    """The words for one column's direction, e.g. Lifetime, +1.3 -> "long-standing"."""
    side = "high" if difference > 0 else "low"
    entry = phrases.get(column) or {}
    return entry.get(side) or f"{side} {column}"


def describing_columns(differences: pd.Series, min_effect: float,
                       correlation: pd.DataFrame | None = None,
                       max_correlation: float = 1.0) -> list[str]:
    """Columns that set a segment apart, strongest first: |difference| >= `min_effect`, and
    not nearly a copy of a column already chosen (|correlation| > `max_correlation`), so a
    name does not say "long contract, many months left" twice in other words."""
    chosen = []
    for column in differences.abs().sort_values(ascending=False, kind="stable").index:
        if abs(differences[column]) < min_effect:
            break
        if correlation is not None and any(
            abs(correlation.loc[column, c]) > max_correlation for c in chosen
        ):
            continue
        chosen.append(column)
    return chosen


def name_segments(differences: pd.DataFrame, phrases: Mapping, n_words: int = 2,
                  min_effect: float = 0.5, correlation: pd.DataFrame | None = None,
                  max_correlation: float = 1.0, lean_effect: float = 0.2) -> dict[int, str]:
    """A short descriptive name per segment, generated from what sets it apart.

    Each name joins the phrases of the segment's `n_words` strongest columns (|std. difference|
    >= `min_effect`). Names that collide get the next column's phrase, then the segment id.
    A segment strong on no column sits near the middle: "near average, leaning <phrase>" for
    its strongest column if that reaches `lean_effect`, else "typical customers".
    """
    described = {
        int(s): [phrase(c, row[c], phrases)
                 for c in describing_columns(row, min_effect, correlation, max_correlation)]
        for s, row in differences.iterrows()
    }
    fallback = {}
    for s, row in differences.iterrows():
        strongest = row.abs().idxmax()
        fallback[int(s)] = (f"near average, leaning {phrase(strongest, row[strongest], phrases)}"
                            if abs(row[strongest]) >= lean_effect else "typical customers")
    words = {s: max(1, n_words) for s in described}

    def current(s):
        return ", ".join(described[s][:words[s]]) or fallback[s]

    while True:
        names = {s: current(s) for s in described}
        clashes = {s for s in names if list(names.values()).count(names[s]) > 1}
        growable = [s for s in clashes if words[s] < len(described[s])]
        if not growable:
            break
        for s in growable:
            words[s] += 1
    return {s: (f"{n} (segment {s})" if s in clashes else n) for s, n in names.items()}


def portrait_table(customers: pd.DataFrame, labels, churn, names: Mapping[int, str],
                   differences: pd.DataFrame, top_features: int = 3) -> pd.DataFrame:
    """One row per segment: size, share, churn rate, what sets it apart, every column's mean.

    Describes every customer column, not only the clustered ones.
    """
    labels = np.asarray(labels)
    churn = pd.Series(np.asarray(churn, dtype=float), index=customers.index)
    rows = []
    for segment in sorted(np.unique(labels)):
        inside = labels == segment
        diff = differences.loc[int(segment)]
        top = diff.abs().sort_values(ascending=False, kind="stable").index[:top_features]
        rows.append({
            "segment": int(segment), "name": names[int(segment)], "size": int(inside.sum()),
            "share": float(inside.mean()), "churn_rate": float(churn[inside].mean()),
            "sets_apart": ", ".join(f"{c} {diff[c]:+.2f}" for c in top),
            **{c: float(customers.loc[inside, c].mean()) for c in customers.columns},
        })
    return pd.DataFrame(rows)



def portraits_markdown(portraits: pd.DataFrame) -> str:
    """The portrait table as Markdown, sorted by churn rate (for the run and the study)."""
    table = portraits.sort_values("churn_rate")
    fixed = ["segment", "name", "size", "share", "churn_rate", "sets_apart"]
    means = [c for c in table.columns if c not in fixed]
    shown = table[fixed + means].copy()
    for column in ("share", "churn_rate"):
        shown[column] = [f"{100 * v:.1f} %" for v in shown[column]]
    shown.columns = ["segment", "name", "size", "share", "churn", "sets it apart (std. diff.)",
                     *means]
    return markdown_table(shown, floats=".2f") + "\n"
