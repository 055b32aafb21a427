"""The report's building blocks: a Section holds text, tables and figures in reading order,
plus the numbers its text quotes; wording helpers shared by the sections.

Every sentence of the report comes from a rule written beside it, applied to numbers computed
from plain inputs, so a different table gives a different, still true, report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pandas as pd

from gymchurn.plots import plt
from gymchurn.segments.portraits import phrase

STAYED, CHURNED = "#4c72b0", "#dd5555"


@dataclass
class Text:
    text: str


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame  # cells already formatted as text: HTML and Markdown show the same


@dataclass
class Figure:
    name: str  # file stem of the PNG
    caption: str
    figure: plt.Figure


@dataclass
class Section:
    key: str
    title: str
    blocks: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # file name -> DataFrame written beside the report (CSV)
    appendix: bool = False  # technical detail, after the main part

    def say(self, text: str) -> None:
        self.blocks.append(Text(text))

    def table(self, caption: str, frame: pd.DataFrame) -> None:
        self.blocks.append(Table(caption, frame.astype(str)))

    def figure(self, name: str, caption: str, figure: plt.Figure) -> None:
        self.blocks.append(Figure(name, caption, figure))

    @property
    def sentences(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, Text)]


def pct(x: float) -> str:
    """A share with one decimal, as the whole report writes percentages: "26.5%"."""
    return f"{100 * x:.1f}%"


COMPARISONS = {"≤": np.less_equal, "<": np.less, "≥": np.greater_equal, ">": np.greater}


def printed_cut(op: str, cut: float, values, max_decimals: int = 12) -> str:
    """`cut` as a rule prints it after `op` (one of ≤ < ≥ >), so that re-applying the printed
    rule to `values` (the column's observed values) selects exactly the customers `values op
    cut` does: a CRM filter typed from the report gets the stated group.

    Rule: the fewest decimals, from 0 when every value is a whole number and from 2 otherwise,
    at which the cut rounded up, or else down, leaves no observed value between the printed
    cut and the true one ("x ≤ 1.3131" prints "≤ 1.32" unless a customer has 1.3131 < x ≤
    1.32; "x ≤ 2.5" on whole months prints "≤ 2"). That condition is the same for both sides
    of a split (≤ and >, or < and ≥), so both print the same number. Without such a rounding
    up to `max_decimals` decimals, the cut as Python writes it.
    """
    compare = COMPARISONS[op]
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    selected = compare(values, cut)
    exact = Decimal(repr(float(cut)))
    whole = bool(np.all(values == np.round(values)))
    for decimals in range(0 if whole else 2, max_decimals + 1):
        for rounding in (ROUND_CEILING, ROUND_FLOOR):
            shown = exact.quantize(Decimal(1).scaleb(-decimals), rounding=rounding)
            if np.array_equal(compare(values, float(shown)), selected):
                return f"{abs(shown) if shown == 0 else shown:f}"  # never "-0.00"
    return repr(float(cut))


def compare_rates(subject: str, rates: Mapping, others: str) -> str:
    """"<subject> churned 2.3 times as often as <others>: 46.0% against 20.0%."."""
    a, b = rates["risky_rate"], rates["safe_rate"]
    if b == 0:
        return f"{subject} churned {pct(a)}, while none of {others} did."
    return f"{subject} churned {a / b:.1f} times as often as {others}: {pct(a)} against {pct(b)}."


def side_phrase(column: str, high: bool, phrases: Mapping) -> str:
    return phrase(column, 1.0 if high else -1.0, phrases)


def binary_columns(columns: Mapping) -> list[str]:
    """Columns whose allowed values are exactly {0, 1}."""
    return [c for c, rule in columns.items() if sorted(rule.get("values") or []) == [0, 1]]


def categorical_columns(columns: Mapping) -> list[str]:
    """Columns with a short list of allowed values (binary flags, contract length)."""
    return [c for c, rule in columns.items() if rule.get("values")]


def compare_groups(churn: pd.Series, risky: pd.Series, safe: pd.Series) -> dict[str, float]:
    """Observed churn of two groups of customers (boolean masks)."""
    return {"risky_rate": float(churn[risky].mean()), "safe_rate": float(churn[safe].mean()),
            "risky_n": int(risky.sum()), "safe_n": int(safe.sum())}


def frame_of(rows: list[dict], formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A table of text cells; `formats` maps a column to a format spec or 'pct'."""
    table = pd.DataFrame(rows)
    for column, spec in (formats or {}).items():
        if column in table:
            table[column] = [pct(v) if spec == "pct" else format(v, spec) for v in table[column]]
    return table
