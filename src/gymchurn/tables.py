"""The one Markdown table writer (leaderboard, portraits, report, benchmarks)."""

from __future__ import annotations

import math

import pandas as pd


def markdown_table(frame: pd.DataFrame, floats: str | None = None, missing: str = "–") -> str:
    """`frame` as a Markdown table. Floats are formatted with `floats` (e.g. ".4f") when given;
    missing values read `missing`; a `|` or line break inside a cell cannot break the table."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing
        if floats and isinstance(value, float):
            return format(value, floats)
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
