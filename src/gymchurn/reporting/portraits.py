"""Customer portraits: each segment's rule (the CRM filter), size, churn, what sets it apart,
a portrait of its customers and one suggested measure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.plots import plt
from gymchurn.reporting.blocks import CHURNED, Section, frame_of, pct, side_phrase
from gymchurn.segments.figures import profile_heatmap
from gymchurn.segments.portraits import (
    portrait_paragraph,
    portrait_table,
    segment_measure,
    standardised_differences,
)
from gymchurn.segments.rules import column_groups, distinct_groups


def customer_portraits(customers: pd.DataFrame, target: str, labels, names: Mapping[int, str],
                       clustered: Sequence[str], phrases: Mapping, source: str,
                       top_features: int = 3, rules: Mapping[int, str] | None = None,
                       templates: Mapping[str, str] | None = None, catalogue=None) -> Section:
    section = Section("segments", "Customer portraits (segments)")
    rules = rules or {}
    features = [c for c in customers.columns if c != target]
    labels = np.asarray(labels)
    differences = standardised_differences(customers[features], labels)
    portraits = portrait_table(customers[features], labels, customers[target], names, differences,
                               top_features).sort_values("churn_rate")
    section.numbers["segments"] = {
        int(r.segment): {"name": r.name, "size": int(r.size), "share": float(r.share),
                         "churn_rate": float(r.churn_rate)} for r in portraits.itertuples()}
    section.say(f"Segments from {source}, clustered on {', '.join(clustered) or 'its columns'}; "
                f"{len(portraits)} groups, from lowest to highest churn.")
    distinct = distinct_groups(customers[features], labels, column_groups(customers[features]))
    rows = []
    for r in portraits.itertuples():
        diff = differences.loc[r.segment]
        apart = diff.abs().sort_values(ascending=False).index[:top_features]
        words = ", ".join(f"{side_phrase(c, diff[c] > 0, phrases)} ({c} {r._asdict()[c]:.1f})"
                          for c in apart)
        rows.append({"segment": r.segment, "name": r.name, "rule (CRM filter)": rules.get(r.segment, "-"),
                     "customers": r.size, "share": r.share, "churn rate": r.churn_rate,
                     "what sets it apart": words})
        # Rule: each segment is described by its `top_features` columns of largest
        # standardised difference from everyone else, in the column's words; its portrait
        # clause by clause from conf/data/ (`portrait`); its measure by segment_measure.
        inside = labels == r.segment
        text = (f"**{r.name}** (segment {r.segment}: {r.size:,} customers, {pct(r.share)}): "
                f"churn {pct(r.churn_rate)}; sets itself apart as {words}.")
        if r.segment in rules:
            text += f" Find them with: {rules[r.segment]}."
        if templates:
            text += " " + portrait_paragraph(customers.loc[inside, features], templates)
        if catalogue is not None:
            m = segment_measure(customers.loc[inside, features], customers.loc[inside, target],
                                catalogue, distinct[r.segment], 0.5)
            text += (f" Suggested measure: {m['action']} ({m['measure']}; it is for "
                     f"{pct(m['covers'])} of them and {pct(m['covers_churned'])} of those who left).")
        section.say(text)
    section.table("Segments, lowest churn first.",
                  frame_of(rows, {"customers": ",d", "share": "pct", "churn rate": "pct"}))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(portraits) + 1.5))
    ax.barh([f"{r.segment}: {r.name}" for r in portraits.itertuples()], portraits["churn_rate"],
            color=CHURNED)
    ax.axvline(customers[target].mean(), color="k", linestyle="--", label="all customers")
    ax.set_xlabel("churn rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    section.figure("segment_churn", "Churn rate per segment (dashed: all customers).", fig)
    section.figure("segment_profiles", "What sets each segment apart (colour: standardised "
                   "difference from the other customers; text: segment mean).",
                   profile_heatmap(differences, portraits, list(clustered)))
    return section
