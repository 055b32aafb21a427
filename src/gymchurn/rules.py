"""Rules over the raw columns, as a CRM filter reads them: the paths of a shallow decision tree
(each leaf = a conjunction of bounds per column), and those bounds in words with cuts printed so
that the printed rule selects exactly the customers the tree does. Used by the report's rule
groups and by the segments, whose rules are the segments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np
import pandas as pd

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


def condition_words(column: str, upper: float | None, lower: float | None, integer: bool,
               labels: Mapping[str, str], phrases: Mapping[str, Mapping[str, str]],
               binary: bool, observed: Sequence | None, values: Sequence | None = None) -> str:
    """One column's bounds on a tree path in words (lower < x <= upper); a column with a few
    known values reads as those values ("contract length (months) is 6 or 12"). `values`: the
    column's observed values, against which a float cut is printed so that the printed rule
    selects the same customers (printed_cut); without them, two decimals."""
    if binary and column in phrases:
        return phrases[column]["low"] if upper is not None else phrases[column]["high"]
    name = labels.get(column, column)
    if observed is not None:
        inside = [v for v in observed if (lower is None or v > lower) and (upper is None or v <= upper)]
        return f"{name} {'is' if len(inside) > 1 else '='} {' or '.join(str(v) for v in inside)}"
    if integer:  # x <= 3.5 is x <= 3; x > 3.5 is x >= 4
        # Bounds beyond the observed values say nothing: "≤ 0" at the smallest value is "= 0".
        smallest, largest = (np.min(values), np.max(values)) if values is not None and len(values) \
            else (-np.inf, np.inf)
        low = max(int(np.floor(lower)) + 1, smallest) if lower is not None else smallest
        high = min(int(np.floor(upper)), largest) if upper is not None else largest
        if low == high:
            return f"{name} = {int(high)}"
        parts = ([f"{name} ≥ {int(low)}"] if lower is not None else []) + \
                ([f"{name} ≤ {int(high)}"] if upper is not None else [])
        return " and ".join(parts)

    def show(op: str, cut: float) -> str:
        return printed_cut(op, cut, values) if values is not None else f"{cut:.2f}"

    parts = ([f"{name} > {show('>', lower)}"] if lower is not None else []) + \
            ([f"{name} ≤ {show('≤', upper)}"] if upper is not None else [])
    return " and ".join(parts)


def leaf_bounds(tree, columns: Sequence[str]) -> dict[int, dict[str, tuple]]:
    """Each leaf of a fitted sklearn tree -> {column: (lower, upper)}: the leaf holds the rows
    with lower < x <= upper for every column on its path (None: no bound on that side)."""
    t = tree.tree_
    leaves: dict[int, dict[str, tuple]] = {}

    def walk(node: int, bounds: dict) -> None:
        if t.children_left[node] == -1:
            leaves[node] = bounds
            return
        column, cut = columns[t.feature[node]], float(t.threshold[node])
        lower, upper = bounds.get(column, (None, None))
        walk(t.children_left[node], {**bounds, column: (lower, cut if upper is None else min(upper, cut))})
        walk(t.children_right[node], {**bounds, column: (cut if lower is None else max(lower, cut), upper)})

    walk(0, {})
    return leaves


def rule_words(bounds: Mapping[str, tuple], X: pd.DataFrame, data_columns: Mapping,
               labels: Mapping[str, str], phrases: Mapping) -> list[str]:
    """A leaf's bounds as conditions in words, one per column (a range on one column is one
    condition), cuts printed against the observed values of `X`."""
    parts = []
    for column, (lower, upper) in bounds.items():
        rule = data_columns.get(column, {})
        values = list(rule.get("values") or [])
        observed = sorted(int(v) for v in X[column].unique()) if values else None
        parts.append(condition_words(column, upper, lower, rule.get("kind") == "int", labels,
                                     phrases, values == [0, 1], observed, X[column].to_numpy()))
    return parts


def condition_expression(column: str, lower: float | None, upper: float | None,
                         rule: Mapping, values) -> str:
    """One column's bounds (lower < x <= upper) as a pandas/CRM filter expression that selects
    the same customers: listed domains and whole numbers as whole-number comparisons, other
    cuts printed against the observed `values` (printed_cut)."""
    domain = list(rule.get("values") or [])
    if domain:
        inside = [v for v in sorted(domain) if (lower is None or v > lower) and (upper is None or v <= upper)]
        if len(inside) == 1:
            return f"{column} == {inside[0]}"
        parts = ([f"{column} >= {inside[0]}"] if lower is not None else []) + \
                ([f"{column} <= {inside[-1]}"] if upper is not None else [])
        return " and ".join(parts)
    if rule.get("kind") == "int":  # x <= 3.5 is x <= 3; x > 3.5 is x >= 4
        parts = ([f"{column} >= {int(np.floor(lower)) + 1}"] if lower is not None else []) + \
                ([f"{column} <= {int(np.floor(upper))}"] if upper is not None else [])
        return " and ".join(parts)
    parts = ([f"{column} > {printed_cut('>', lower, values)}"] if lower is not None else []) + \
            ([f"{column} <= {printed_cut('≤', upper, values)}"] if upper is not None else [])
    return " and ".join(parts)


def rule_expression(bounds: Mapping[str, tuple], X: pd.DataFrame, data_columns: Mapping) -> str:
    """A leaf's bounds as one filter expression over the raw columns (`DataFrame.query` and a
    CRM's filter read it the same way); "True" for the root of a tree that never split."""
    parts = [condition_expression(column, lower, upper, data_columns.get(column, {}),
                                  X[column].to_numpy())
             for column, (lower, upper) in bounds.items()]
    return " and ".join(parts) or "True"
