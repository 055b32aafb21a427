"""Realised performance: how the model did on a month whose outcomes are known, against what
its holdout says a month of that size would show.

Metrics (each for many weightings of the same rows at once, so a bootstrap is a matrix product,
not a loop of sklearn calls): ROC AUC, precision and recall at the model's threshold, the share
of leavers among the top `capacity` share of customers by risk (the leavers a department that
can call that many would reach), the observed and the predicted churn rate.

Two intervals per metric:
- `expected`: the holdout's (probability, churn) pairs resampled to the month's size and mix
  (its number of leavers from the holdout's leavers, its stayers from the stayers), many times,
  with the holdout's own uncertainty (it is a sample too): the range a month like this one
  shows when the model performs as on its holdout. A small month has a wide range, so its
  noise is not mistaken for a decay; a large one is held to what the holdout can vouch for.
  The mix matters for the metrics that depend on it: with half the customers leaving, calls to
  the top 10 % can reach at most a fifth of the leavers, so a holdout with a quarter leaving
  is no yardstick for the share caught unless it is redrawn at the month's churn rate.
  (The churn rate itself is then given, not expected: its range is left empty.);
- `interval`: the month's own bootstrap (Poisson weights), the uncertainty of the realised figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ("roc_auc", "precision", "recall", "capture", "churn_rate", "predicted_rate")
SKILL = ("roc_auc", "precision", "recall", "capture")  # higher is better: a shortfall is a decay
BATCH = 25  # bootstrap replicates per matrix: 25 x 100,000 rows is 20 MB


@dataclass
class Ranked:
    """Rows sorted by descending probability, with the starts of runs of equal probability."""

    probability: np.ndarray
    churn: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, probability, churn) -> Ranked:
        order = np.argsort(-np.asarray(probability, dtype=float), kind="stable")
        p = np.asarray(probability, dtype=float)[order]
        starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
        return cls(p, np.asarray(churn, dtype=float)[order], starts)


def weighted_metrics(ranked: Ranked, weights: np.ndarray, threshold: float,
                     capacity: float) -> dict[str, np.ndarray]:
    """The metrics for each row of `weights` (replicates x customers, in `ranked`'s order)."""
    w = np.atleast_2d(weights).astype(float)
    y = ranked.churn
    pos, neg = w * y, w * (1.0 - y)
    total, n_pos, n_neg = w.sum(axis=1), pos.sum(axis=1), neg.sum(axis=1)
    # ROC AUC with ties counted half: per run of equal probability, its leavers times the stayers
    # scored lower, plus half the stayers scored the same.
    pos_g = np.add.reduceat(pos, ranked.starts, axis=1)
    neg_g = np.add.reduceat(neg, ranked.starts, axis=1)
    neg_lower = n_neg[:, None] - np.cumsum(neg_g, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_g * (neg_lower + 0.5 * neg_g)).sum(axis=1) / (n_pos * n_neg)
        flagged = ranked.probability >= threshold
        tp, fp = pos[:, flagged].sum(axis=1), neg[:, flagged].sum(axis=1)
        precision = tp / (tp + fp)
        recall = tp / n_pos
        # The first `capacity` of the customers (by weight) in risk order.
        top = np.cumsum(w, axis=1) <= capacity * total[:, None] + 1e-9
        capture = (pos * top).sum(axis=1) / n_pos
        predicted = (w * ranked.probability).sum(axis=1) / total
    return {"roc_auc": auc, "precision": precision, "recall": recall, "capture": capture,
            "churn_rate": n_pos / total, "predicted_rate": predicted}


def _replicates(draw, ranked: Ranked, threshold: float, capacity: float, n_boot: int) -> dict:
    values = {m: [] for m in METRICS}
    for start in range(0, n_boot, BATCH):
        for m, v in weighted_metrics(ranked, draw(min(BATCH, n_boot - start)), threshold,
                                     capacity).items():
            values[m].append(v)
    return {m: np.concatenate(v) for m, v in values.items()}


def month_like(rng, holdout_churn: np.ndarray, leavers: int, n: int):
    """A draw of holdout weights (replicates x holdout rows) for months of `n` customers with
    `leavers` of them leaving, from the population the holdout stands for. The holdout is itself
    a sample, so each replicate first draws that population's weights (Bayesian bootstrap,
    Dirichlet(1, ..., 1) over its leavers and over its stayers), then the month's leavers from
    the leavers and its stayers from the stayers."""
    groups = [(holdout_churn == 1, leavers), (holdout_churn == 0, n - leavers)]

    def draw(b: int) -> np.ndarray:
        weights = np.zeros((b, len(holdout_churn)))
        for rows, count in groups:
            weights[:, rows] = rng.multinomial(count, rng.dirichlet(np.ones(rows.sum()), size=b))
        return weights
    return draw


def realised_performance(probability, churn, holdout_probability, holdout_churn,
                         threshold: float, capacity: float, n_boot: int, seed: int,
                         level: float = 0.95) -> pd.DataFrame:
    """One row per metric: the month's value and bootstrap interval, the holdout's value and the
    range expected for a month of this size and churn rate (holdout resampled), and how far below
    that range a skill metric is (`shortfall`, 0 when inside or above; NaN for the two rates)."""
    rng = np.random.default_rng(seed)
    month = Ranked.of(probability, churn)
    holdout = Ranked.of(holdout_probability, holdout_churn)
    n, n_hold = len(month.probability), len(holdout.probability)
    now = weighted_metrics(month, np.ones(n), threshold, capacity)
    then = weighted_metrics(holdout, np.ones(n_hold), threshold, capacity)
    own = _replicates(lambda b: rng.poisson(1.0, size=(b, n)), month, threshold, capacity, n_boot)
    expected = _replicates(month_like(rng, holdout.churn, int(month.churn.sum()), n), holdout,
                           threshold, capacity, n_boot)
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    rows = []
    for m in METRICS:
        low, high = np.nanpercentile(own[m], tails)
        exp_low, exp_high = np.nanpercentile(expected[m], tails) if m != "churn_rate" \
            else (np.nan, np.nan)  # drawn at the month's rate: nothing to expect
        value = float(now[m][0])
        rows.append({"metric": m, "value": value, "low": float(low), "high": float(high),
                     "holdout": float(then[m][0]), "expected_low": float(exp_low),
                     "expected_high": float(exp_high),
                     # the rates describe the month, not the model: no shortfall
                     "shortfall": float(max(exp_low - value, 0.0)) if m in SKILL else float("nan")})
    return pd.DataFrame(rows).set_index("metric")


def calibration_by_decile(probability, churn, deciles: int = 10) -> pd.DataFrame:
    """Customers cut into risk deciles: mean predicted and observed churn, with the observed
    share's 95 % Wilson interval (whether the prediction is inside it)."""
    frame = pd.DataFrame({"p": np.asarray(probability, dtype=float), "y": np.asarray(churn)})
    frame["decile"] = pd.qcut(frame["p"].rank(method="first"), deciles, labels=False) + 1
    table = frame.groupby("decile").agg(customers=("y", "size"), predicted=("p", "mean"),
                                        observed=("y", "mean"))
    z, n, k = 1.959964, table["customers"], table["observed"]
    centre = (k + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(k * (1 - k) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    # (rounding can put a bound a hair past an observed 0 % or 100 %)
    table["observed_low"] = np.minimum(centre - half, k).clip(0, 1)
    table["observed_high"] = np.maximum(centre + half, k).clip(0, 1)
    return table.reset_index()


def expected_leavers(probability) -> tuple[float, float]:
    """The expected number of leavers (sum of probabilities) and its standard deviation if the
    probabilities are right (customers independent)."""
    p = np.asarray(probability, dtype=float)
    return float(p.sum()), float(np.sqrt(np.sum(p * (1 - p))))
