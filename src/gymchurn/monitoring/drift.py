"""Data drift: how far each column of a new month has moved from the model's training split,
from the reference statistics alone (gymchurn.monitoring.reference). numpy and scipy, not
Evidently: Evidently compares two DataFrames, and the training file is exactly what monitoring
must not need (experiments/monitoring.md has the measurements behind this choice).

Per column:
- population stability index (PSI) over the reference's bins (training deciles, or the values
  of a listed-values column): sum over bins of (now - then) * ln(now / then); how much moved;
- a test of "same distribution": two-sample Kolmogorov-Smirnov for a numeric column (asymptotic
  p-value, the reference's ECDF from its quantile sketch) and chi-square of the counts for a
  listed-values one; whether the move is more than a month of this size shows by chance;
- the normalised Wasserstein distance (numeric: mean |quantile now - quantile then| over the
  training standard deviation), the share of values outside the training range (or of values the
  training split never had), and the mean or the value shares then and now, in words.

A column's status needs both an effect and evidence (conf/monitor.yaml, drift): `drift` when
PSI reaches `psi_drift` and the test's p-value is below `alpha`, `watch` when PSI reaches
`psi_watch` with the same evidence or when `out_of_range_watch` of the values lie outside
what training saw, else `ok`. The p-value keeps a small month's noise from being called drift;
PSI keeps a large month's trivial but "significant" differences from being called drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gymchurn.monitoring.reference import bin_shares, category_key, quantile_grid

PSI_FLOOR = 1e-4  # a bin empty on one side counts as this share: PSI stays finite
STATUS_ORDER = {"ok": 0, "watch": 1, "drift": 2}


@dataclass(frozen=True)
class DriftThresholds:
    psi_watch: float
    psi_drift: float
    alpha: float
    out_of_range_watch: float

    @classmethod
    def from_config(cls, cfg: Mapping) -> DriftThresholds:
        return cls(float(cfg["psi_watch"]), float(cfg["psi_drift"]), float(cfg["alpha"]),
                   float(cfg["out_of_range_watch"]))


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two vectors of bin shares."""
    ref = np.clip(np.asarray(reference, dtype=float), PSI_FLOOR, None)
    cur = np.clip(np.asarray(current, dtype=float), PSI_FLOOR, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def sketch_cdf(quantiles: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The reference's cumulative share at `x`, read from its quantile sketch: the largest grid
    probability whose quantile is <= x (0 below the minimum)."""
    grid = quantile_grid()
    below = np.searchsorted(quantiles, x, side="right")
    return np.where(below > 0, grid[np.maximum(below - 1, 0)], 0.0)


def ks_test(reference: Mapping, values: np.ndarray) -> tuple[float, float]:
    """(D, p-value): the largest gap between the two cumulative distributions, and the
    asymptotic two-sample p-value with the reference's n (scipy's Kolmogorov distribution).

    Both cumulative distributions are step functions, so the largest gap is at a step of one of
    them: the sketch's quantiles or the month's own values."""
    from scipy.stats import kstwobign

    quantiles = np.asarray(reference["quantiles"], dtype=float)
    ordered = np.sort(values)
    points = np.union1d(quantiles, ordered)
    current = np.searchsorted(ordered, points, side="right") / len(ordered)
    d = float(np.max(np.abs(current - sketch_cdf(quantiles, points))))
    n, m = int(reference["n"]), len(ordered)
    return d, float(kstwobign.sf(d * np.sqrt(n * m / (n + m))))


def wasserstein_normed(reference: Mapping, values: np.ndarray) -> float:
    """Wasserstein-1 distance between the two distributions (the mean gap between their
    quantile functions) in units of the training standard deviation."""
    now = np.quantile(values, quantile_grid(), method="inverted_cdf")
    distance = float(np.mean(np.abs(now - np.asarray(reference["quantiles"], dtype=float))))
    return distance / reference["std"] if reference["std"] > 0 else distance


def continuous_drift(reference: Mapping, values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    d, p = ks_test(reference, values)
    outside = (values < reference["min"]) | (values > reference["max"])
    return {
        "kind": "continuous",
        "psi": psi(reference["shares"], bin_shares(values, reference["edges"])),
        "test": "Kolmogorov-Smirnov", "statistic": d, "p_value": p,
        "wasserstein": wasserstein_normed(reference, values),
        "out_of_range": float(outside.mean()),
        "then": float(reference["mean"]), "now": float(values.mean()),
    }


def categorical_drift(reference: Mapping, values: pd.Series) -> dict:
    from scipy.stats import chi2_contingency

    now = values.map(category_key).value_counts()
    then = pd.Series(reference["counts"], dtype=float)
    categories = sorted(set(then.index) | set(now.index), key=float)
    then, now = then.reindex(categories, fill_value=0), now.reindex(categories, fill_value=0)
    table = np.vstack([then.to_numpy(), now.to_numpy()]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        statistic, p = 0.0, 1.0  # one value on both sides: nothing to compare
    else:
        result = chi2_contingency(table, correction=False)
        statistic, p = float(result.statistic), float(result.pvalue)
    then_share, now_share = then / then.sum(), now / max(now.sum(), 1)
    moved = (now_share - then_share).abs().idxmax()
    return {
        "kind": "categorical",
        "psi": psi(then_share.to_numpy(), now_share.to_numpy()),
        "test": "chi-square", "statistic": statistic, "p_value": p,
        "wasserstein": float("nan"),
        "out_of_range": float(now_share[then == 0].sum()),  # values training never had
        # the value whose share moved most, as "share of <value>"
        "value": moved, "then": float(then_share[moved]), "now": float(now_share[moved]),
    }


def status(row: Mapping, limits: DriftThresholds) -> str:
    evidence = row["p_value"] < limits.alpha
    if evidence and row["psi"] >= limits.psi_drift:
        return "drift"
    if (evidence and row["psi"] >= limits.psi_watch) or row["out_of_range"] >= limits.out_of_range_watch:
        return "watch"
    return "ok"


def feature_drift(features: Mapping[str, Mapping], X: pd.DataFrame, limits: DriftThresholds,
                  importance: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per reference feature: the scores above, its status, and its importance rank in
    the model (1 = matters most), sorted with the most drifted first."""
    rank = {f: i + 1 for i, f in enumerate(importance or {})}
    rows = []
    for name, reference in features.items():
        if reference["kind"] == "categorical":
            row = categorical_drift(reference, X[name])
        else:
            row = continuous_drift(reference, X[name].to_numpy())
        row = {"feature": name, **row, "importance_rank": rank.get(name, len(rank) + 1)}
        row["status"] = status(row, limits)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["severity"] = table["status"].map(STATUS_ORDER)
    table = table.sort_values(["severity", "psi"], ascending=False).drop(columns="severity")
    return table.reset_index(drop=True)


def score_drift(reference: Mapping, probability: np.ndarray, limits: DriftThresholds) -> dict:
    """The churn probabilities' drift against the reference scores (same tests as a feature)."""
    row = continuous_drift(reference, probability)
    row["status"] = status(row, limits)
    return row
