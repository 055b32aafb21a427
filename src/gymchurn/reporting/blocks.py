"""The report's building blocks: a Section holds text, tables and figures in reading order,
plus the numbers its text quotes; wording helpers shared by the sections.

Every sentence of the report comes from a rule written beside it, applied to numbers computed
from plain inputs, so a different table gives a different, still true, report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from gymchurn.plots import plt
from gymchurn.rules import COMPARISONS, printed_cut  # noqa: F401  (sections print cuts)
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
