"""Portraits: what sets each segment apart (standardised differences), generated names, the
portrait table over every customer column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.churn.actions import Catalogue, condition_mask
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
                       max_correlation: float = 1.0, first: Sequence[str] = ()) -> list[str]:
    """Columns that set a segment apart: the `first` ones (its rule's columns) strongest first,
    then the others with |difference| >= `min_effect`, strongest first; never nearly a copy of
    a column already chosen (|correlation| > `max_correlation`), so a name does not say "long
    contract, many months left" twice in other words."""
    strongest = differences.abs().sort_values(ascending=False, kind="stable").index
    chosen = []
    for column in [c for c in strongest if c in first] + [c for c in strongest if c not in first]:
        if abs(differences[column]) < min_effect and column not in first:
            break
        if correlation is not None and any(
            abs(correlation.loc[column, c]) > max_correlation for c in chosen
        ):
            continue
        chosen.append(column)
    return chosen


def name_segments(differences: pd.DataFrame, phrases: Mapping, n_words: int = 2,
                  min_effect: float = 0.5, correlation: pd.DataFrame | None = None,
                  max_correlation: float = 1.0, lean_effect: float = 0.2,
                  rule_columns: Mapping[int, Sequence[str]] | None = None) -> dict[int, str]:
    """A short descriptive name per segment, generated from its rule and what sets it apart.

    Each name joins the phrases of the segment's first `n_words` describing columns: the
    columns of its rule (`rule_columns`), then the strongest others (|std. difference| >=
    `min_effect`); a column's side (high/low) is the sign of its difference. Names that
    collide get the next column's phrase, then the segment id. A segment strong on no column
    sits near the middle: "near average, leaning <phrase>" for its strongest column if that
    reaches `lean_effect`, else "typical customers".
    """
    described = {
        int(s): [phrase(c, row[c], phrases)
                 for c in describing_columns(row, min_effect, correlation, max_correlation,
                                             (rule_columns or {}).get(int(s), ()))]
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


def portrait_paragraph(customers: pd.DataFrame, templates: Mapping[str, str]) -> str:
    """One segment's customers in words: one clause per column, in the order of `templates`
    (column -> text with {mean}, {median} or {share}: the mean in per cent), joined into one
    paragraph. Columns without a template read "<column> <mean>"."""
    clauses = []
    for column in [*templates, *(c for c in customers.columns if c not in templates)]:
        if column not in customers.columns:
            continue
        values = customers[column].astype(float)
        stats = {"mean": float(values.mean()), "median": float(values.median()),
                 "share": 100 * float(values.mean())}
        clauses.append(templates[column].format(**stats) if column in templates
                       else f"{column} {stats['mean']:.2f}")
    text = "; ".join(clauses)
    return text[:1].upper() + text[1:] + "."


def segment_measure(customers: pd.DataFrame, churned, catalogue: Catalogue,
                    drivers: Sequence[str], min_cover: float = 0.5) -> dict:
    """The one measure suggested for a segment (its customers and who of them churned), tied to
    what drives its churn: the first measure of the catalogue whose driver column is one the
    segment stands out on (`drivers`: its rule and distinct columns) and whose `for` holds for
    at least `min_cover` of its customers; else the measure whose `for` holds for most of its
    churned customers; else the default action. Says how many customers and churned customers
    the measure's condition covers."""
    churned = np.asarray(churned, dtype=bool)
    covers = {}
    for m in catalogue.items:
        mask = condition_mask(customers, m.when, f"measure '{m.name}': for").to_numpy()
        covers[m.name] = (m, float(mask.mean()) if len(mask) else 0.0,
                          float(mask[churned].mean()) if churned.any() else 0.0)
    tied = [v for v in covers.values() if v[0].driver in drivers and v[1] >= min_cover]
    reach = max(covers.values(), key=lambda v: v[2], default=None)
    if tied:
        (m, members, lost), why = tied[0], "driver"
    elif reach is not None and reach[2] > 0:
        (m, members, lost), why = reach, "reach"
    else:
        return {"measure": "default", "action": catalogue.default_action, "driver": None,
                "covers": 1.0, "covers_churned": 1.0, "why": "default"}
    return {"measure": m.name, "action": m.action, "driver": m.driver, "covers": members,
            "covers_churned": lost, "why": why}


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



def portraits_markdown(portraits: pd.DataFrame, labels: Mapping[str, str] | None = None) -> str:
    """The portraits as Markdown, lowest churn first (for the run and the study): per segment
    its rule, filter, portrait paragraph and suggested measure, then the table of means, each
    column headed by its label in words (conf/data `labels`) when it has one."""
    table = portraits.sort_values("churn_rate")
    parts = []
    if "rule" in table.columns:
        for r in table.itertuples():
            parts.append(
                f"### {r.name} (segment {r.segment})\n\n"
                f"{r.size:,} customers ({100 * r.share:.1f} %), churn {100 * r.churn_rate:.1f} %.\n\n"
                f"- **Rule:** {r.rule} (filter: `{r.filter}`)\n"
                f"- **Stands out on:** {r.distinct_columns or 'no column by 0.5 SD'}\n"
                f"- **Portrait:** {r.portrait}\n"
                f"- **Suggested measure:** {r.measure}: {r.action} (its condition holds for "
                f"{100 * r.measure_covers:.0f} % of the segment and "
                f"{100 * r.measure_covers_churned:.0f} % of those who left)\n")
    fixed = ["segment", "name", "size", "share", "churn_rate", "sets_apart"]
    described = {"rule", "filter", "distinct_columns", "n_distinct", "portrait", "measure",
                 "action", "measure_covers", "measure_covers_churned", "rule_columns"}
    means = [c for c in table.columns if c not in fixed and c not in described]
    shown = table[fixed + means].copy()
    for column in ("share", "churn_rate"):
        shown[column] = [f"{100 * v:.1f} %" for v in shown[column]]
    shown.columns = ["segment", "name", "size", "share", "churn", "sets it apart (std. diff.)",
                     *[(labels or {}).get(c, c) for c in means]]
    return "\n".join(parts) + "\n" + markdown_table(shown, floats=".2f") + "\n"
