"""Who to call: the still-active customers ranked by their churn probability (out-of-fold in the
retention report, the judged model's in the monthly check), each with why (top reasons in
words), what to do (the first matching measure of conf/measures/) and their own columns so a CRM
can find them; and the section that introduces the list.

The customer table has no id column, so a customer is named by their 1-based row number in it.
The list is written in full as call_list.csv beside the report (Section.files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.churn.actions import Catalogue, suggested_actions
from gymchurn.churn.out_of_fold import OutOfFold
from gymchurn.churn.reasons import REASON_COLUMNS
from gymchurn.errors import GymchurnError
from gymchurn.reporting.blocks import Section, frame_of, pct

CALL_LIST_FILE = "call_list.csv"
LEAD_COLUMNS = ["priority_rank", "customer_row", "churn_probability", "at_risk", *REASON_COLUMNS,
                "segment", "segment_name", "suggested_action"]


def call_list_table(customers: pd.DataFrame, target: str, oof: OutOfFold, threshold: float,
                    segment_labels: Sequence, segment_names: Mapping[int, str],
                    catalogue: Catalogue) -> pd.DataFrame:
    """The customers who stayed (`target` == 0: the still-active members), the highest
    out-of-fold churn probability first: see `ranked_call_list`. `oof`, `segment_labels`: one
    entry per row of `customers`."""
    return ranked_call_list(customers.drop(columns=[target]), customers[target].to_numpy() == 0,
                            oof.proba, oof.reasons, threshold, segment_labels, segment_names,
                            catalogue)


def ranked_call_list(customers: pd.DataFrame, active: np.ndarray, proba: np.ndarray,
                     reasons: Sequence[np.ndarray], threshold: float,
                     segment_labels: Sequence | None, segment_names: Mapping[int, str],
                     catalogue: Catalogue) -> pd.DataFrame:
    """The `active` customers, the highest churn probability first (equal ones by row order):
    LEAD_COLUMNS, then the customer's own columns. `proba`, each of `reasons` (reason_1..3 in
    words, None where not given) and `segment_labels` (None: no segmentation) hold one entry
    per row of `customers`."""
    rows = np.flatnonzero(active)
    order = rows[np.argsort(-proba[rows], kind="stable")]
    raw = customers.iloc[order].reset_index(drop=True)
    clashes = sorted(set(raw.columns) & set(LEAD_COLUMNS))
    if clashes:
        raise GymchurnError(f"the customer table has column(s) {clashes}, which the call list "
                            "adds itself; rename them in the table.")
    _, actions = suggested_actions(raw, catalogue)
    segments = np.asarray(segment_labels)[order] if segment_labels is not None \
        else np.full(len(order), None, dtype=object)
    lead = pd.DataFrame({
        "priority_rank": np.arange(1, len(order) + 1),
        "customer_row": order + 1,
        "churn_probability": np.round(proba[order], 3),
        "at_risk": (proba[order] >= threshold).astype(int),  # the unrounded probability
        **{column: np.asarray(texts, dtype=object)[order]
           for column, texts in zip(REASON_COLUMNS, reasons, strict=True)},
        "segment": segments,
        "segment_name": [None if s is None else segment_names.get(s, str(s))
                         for s in segments.tolist()],
        "suggested_action": actions,
    })
    return pd.concat([lead, raw], axis=1)


def most_common(values: pd.Series) -> tuple[str, int] | None:
    """The most frequent value and its count (ties: the alphabetically first); None if empty."""
    counts = values.dropna().value_counts()
    if counts.empty:
        return None
    best = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[0]
    return str(best[0]), int(best[1])


def reason_name(reason: str) -> str:
    """"visits a week this month = 0.5" -> "visits a week this month" (the value after the last
    " = "; a plain name never ends in one)."""
    return reason.rsplit(" = ", 1)[0]


REPORT_WHOSE = "who are still members (those who stayed in the data)"
REPORT_SCORES = ("The scores are out-of-fold: each customer was scored by a copy of the model that "
                 "never saw them.")


def who_to_call(table: pd.DataFrame, threshold: float, threshold_note: str,
                show: int = 15, whose: str = REPORT_WHOSE, scores: str = REPORT_SCORES) -> Section:
    """The "Who to call" section for a `ranked_call_list`: how many are still active and at
    risk, what the top of the list looks like, the suggested actions of those at risk, the top
    `show` rows, and the full list attached as call_list.csv. `whose` says which customers the
    list holds, `scores` where their probabilities come from."""
    section = Section("call", "Who to call")
    section.files[CALL_LIST_FILE] = table
    n = len(table)
    at_risk = table[table["at_risk"] == 1]
    head = table.head(show)
    section.numbers.update(active=n, at_risk=len(at_risk), shown=len(head), threshold=threshold,
                           at_risk_share=len(at_risk) / n if n else 0.0)
    if n == 0:
        section.say("No customer in the table is still active (every one of them left), so "
                    "there is no one to call.")
        return section

    section.say(f"The call list ranks the {n:,} customers {whose} by their churn probability, "
                "highest first.")
    # Rule: the at-risk count is the rows at or above the threshold; with none, say the list
    # still orders whom to call first.
    if len(at_risk):
        section.say(f"{len(at_risk):,} of them ({pct(len(at_risk) / n)}) are at risk: a churn "
                    f"probability of at least {100 * threshold:.1f}%.")
    else:
        section.say(f"None of them reaches the threshold of {100 * threshold:.1f}%; the list still "
                    "gives the order to call in when there is time.")
    if threshold_note:
        section.say(threshold_note)

    # Rule: the top `show` rows by their probability range (one probability when both ends
    # read the same), their most common first reason (by its plain name, without the
    # customer's value) and their most common segment.
    lo, hi = float(head["churn_probability"].min()), float(head["churn_probability"].max())
    section.numbers["top_probability_range"] = (lo, hi)
    top = f"The first {len(head)} on the list have " + (
        f"churn probabilities from {lo:.0%} to {hi:.0%}" if f"{lo:.0%}" != f"{hi:.0%}"
        else f"a churn probability of {hi:.0%}")
    first_reason = most_common(head["reason_1"].dropna().map(reason_name))
    if first_reason:
        section.numbers["top_first_reason"] = first_reason
        top += f'; for {first_reason[1]} of them the first reason is "{first_reason[0]}"'
    segment = most_common(head["segment_name"])
    section.numbers["top_segment"] = segment
    if segment:  # None without a segmentation model
        top += f'; {segment[1]} of them are in the segment "{segment[0]}"'
    section.say(top + ".")

    # Rule: every suggested action among the at-risk customers, the most frequent first.
    counts = dict(sorted(at_risk["suggested_action"].value_counts().items(),
                         key=lambda item: (-item[1], str(item[0]))))
    section.numbers["actions_at_risk"] = {str(a): int(c) for a, c in counts.items()}
    if counts:
        section.say(f"Suggested actions for the {len(at_risk):,} at risk (for each customer the "
                    "first measure of the catalogue whose condition holds): "
                    + "; ".join(f'"{action}" for {count:,}' for action, count in counts.items())
                    + ".")

    section.say(f"The full ranked list of all {n:,} is {CALL_LIST_FILE} beside this report "
                "(rank, row in the customer table, probability, at risk, reasons, segment, action "
                f"and the customer's own columns, to find them in the CRM). {scores}")
    section.table(f"The top {len(head)} of the call list ({CALL_LIST_FILE} has all {n:,}).",
                  frame_of([{
                      "rank": r.priority_rank, "row": r.customer_row,
                      "risk": f"{100 * r.churn_probability:.0f}%",
                      "reasons": "; ".join(str(getattr(r, c)) for c in REASON_COLUMNS
                                           if isinstance(getattr(r, c), str)) or "-",
                      "segment": r.segment_name or "-", "action": r.suggested_action,
                  } for r in head.itertuples(index=False)]))
    return section
