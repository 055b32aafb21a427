"""Reference statistics: what monitoring needs to know about the data a model learned from,
computed at training time and logged with the model (its settings' "reference"), so judging a
new month never needs the training file.

Per feature, from the training split:
- a 0/1 or listed-values column (conf/data: `values`): its counts per value;
- any other column: n, min, max, mean, std, the decile edges that make its population-stability
  bins and the share of customers in each, and a quantile sketch (QUANTILE_POINTS points) that
  stands in for its distribution in the Kolmogorov-Smirnov and Wasserstein comparisons (the
  sketch's error in a cumulative share is at most 1 / (QUANTILE_POINTS - 1)).

Scores: the training split's out-of-fold churn probabilities (a sketch, as a feature's) and the
holdout's (probability, churn) pairs from the registered pipeline itself: out-of-sample scores of
the very model that is monitored. The holdout pairs are the reference for prediction drift and
for realised performance: resampling them at a month's size gives the range of a metric that a
month of that size would show if the model performed as on the holdout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

REFERENCE_FORMAT = 1       # bumped when the layout changes; monitoring reads what it knows
QUANTILE_POINTS = 501      # probabilities 0, 0.002, ..., 1
PSI_BINS = 10              # population-stability bins: training deciles ("standard bins")


def is_categorical(rule: Mapping) -> bool:
    """A column with a list of allowed values (0/1 flags, contract length): compared by counts."""
    return bool(rule.get("values"))


def quantile_grid() -> np.ndarray:
    return np.linspace(0.0, 1.0, QUANTILE_POINTS)


def decile_edges(values: np.ndarray) -> list[float]:
    """The inner edges of the population-stability bins: the training deciles, ties merged (an
    integer column with few values gets fewer, wider bins). Bin i holds edges[i-1] < x <= edges[i]."""
    inner = np.quantile(values, np.arange(1, PSI_BINS) / PSI_BINS)
    return [float(x) for x in np.unique(inner)]


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    return np.bincount(index, minlength=len(edges) + 1) / max(len(values), 1)


def continuous_reference(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    edges = decile_edges(values)
    return {
        "kind": "continuous", "n": int(len(values)),
        "min": float(values.min()), "max": float(values.max()),
        "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "edges": edges, "shares": [float(s) for s in bin_shares(values, edges)],
        # inverted_cdf: every point is a value that occurred, so integer columns keep their steps
        # unrounded: a month's value equal to a training value must land in the same bin
        "quantiles": [float(q) for q in np.quantile(values, quantile_grid(), method="inverted_cdf")],
    }


def categorical_reference(values: pd.Series) -> dict:
    counts = values.value_counts().sort_index()
    return {"kind": "categorical", "n": int(len(values)),
            "counts": {str(value): int(n) for value, n in counts.items()}}


def category_key(value) -> str:
    """How a category is written in the reference: 12 and 12.0 are the same contract length."""
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def feature_reference(X: pd.DataFrame, columns: Mapping[str, Mapping]) -> dict:
    """Per feature column of `X` with a rule in `columns` (conf/data: columns)."""
    stats = {}
    for name in X.columns:
        rule = columns.get(name, {})
        if is_categorical(rule):
            stats[name] = categorical_reference(X[name].map(category_key))
        else:
            stats[name] = continuous_reference(X[name].to_numpy())
    return stats


def reference_statistics(X_train: pd.DataFrame, columns: Mapping[str, Mapping],
                         oof_probability: np.ndarray, holdout_probability: np.ndarray,
                         holdout_churn: np.ndarray, threshold: float,
                         importance: pd.DataFrame) -> dict:
    """Everything monitoring needs, as plain JSON values. `importance`: the holdout permutation
    importance (feature, importance_mean), the order in which features matter to the model."""
    ranked = importance.sort_values("importance_mean", ascending=False)
    return {
        "format": REFERENCE_FORMAT,
        "n_train": int(len(X_train)),
        "features": feature_reference(X_train, columns),
        "importance": {str(f): float(v)
                       for f, v in zip(ranked["feature"], ranked["importance_mean"], strict=True)},
        "training_scores": continuous_reference(np.asarray(oof_probability, dtype=float)),
        "holdout": {
            "probability": [float(p) for p in holdout_probability],
            "churn": [int(c) for c in holdout_churn],
        },
        "threshold": float(threshold),
    }


def segment_reference(segments: np.ndarray, churn: np.ndarray | None = None) -> dict:
    """A segmentation's reference: each segment's share of the customers it was fitted on (and
    their churn, when known), for the segment mix of a new month."""
    ids, counts = np.unique(np.asarray(segments), return_counts=True)
    reference = {"n": int(len(segments)),
                 "shares": {str(int(s)): float(c / len(segments)) for s, c in zip(ids, counts, strict=True)}}
    if churn is not None:
        churn = np.asarray(churn)
        reference["churn"] = {str(int(s)): float(churn[segments == s].mean()) for s in ids}
    return reference
