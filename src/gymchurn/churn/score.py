"""Scoring customers with a fitted churn pipeline: priority rank, probability, flag at the
model's threshold, risk band, segment (when a segmentation model is given), top-3 reasons in
words (exact SHAP contributions), suggested action (conf/measures/). Plain inputs, a plain
table out; `gymchurn.predict` reads and writes the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gymchurn.churn import PROBABILITY_COLUMN, REASON_CHOICES
from gymchurn.churn.actions import Catalogue, suggested_actions
from gymchurn.churn.reasons import REASON_COLUMNS
from gymchurn.errors import GymchurnError

# The score columns, in order. The customer's row in the input (1 = the first customer: the
# table has no id, and sorting by rank must not lose who is who) and the rank lead (sort by it
# to get the call order); the action ends the row (who, how likely, why, then what to do); the
# segment pair and the reasons are there when asked for. gymchurn.outputs recognises a previous
# scores file by its tail from the rank on, and by the layout before the rank and the action
# existed (BASE..REASON_COLUMNS).
ROW_COLUMN, RANK_COLUMN, ACTION_COLUMN = "customer_row", "priority_rank", "suggested_action"
BASE_COLUMNS = [PROBABILITY_COLUMN, "churn_flag", "risk_band"]
SEGMENT_COLUMNS = ["segment", "segment_name"]
SCORE_COLUMNS = [ROW_COLUMN, RANK_COLUMN, *BASE_COLUMNS, *SEGMENT_COLUMNS, *REASON_COLUMNS,
                 ACTION_COLUMN]


def band_cuts(risk_bands: Mapping, threshold: float) -> tuple[list[str], np.ndarray]:
    """Band labels and their starting probabilities, `threshold` replaced by the model's."""
    labels, cuts = [], []
    for label, cut in risk_bands.items():
        value = threshold if cut == "threshold" else cut
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise GymchurnError(
                f"risk_bands.{label}={cut}: use a probability between 0 and 1, or `threshold`."
            )
        labels.append(str(label))
        cuts.append(float(value))
    if not labels or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        shown = ", ".join(f"{lab} from {c:.3f}" for lab, c in zip(labels, cuts, strict=True))
        raise GymchurnError(
            f"risk bands must start at increasing probabilities; with this model's threshold "
            f"{threshold:.3f} they are: {shown}. Change risk_bands in conf/predict.yaml."
        )
    return labels, np.asarray(cuts)


def band_index(proba: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Each probability's band (index into the labels): the last band whose cut it reaches; a
    probability below the first cut is in the first band."""
    return np.clip(np.searchsorted(cuts, proba, side="right") - 1, 0, len(cuts) - 1)


def priority_ranks(proba: np.ndarray) -> np.ndarray:
    """1 for the highest probability, 2 for the next, ...; equal probabilities by row order."""
    ranks = np.empty(len(proba), dtype=np.int64)
    ranks[np.argsort(-np.asarray(proba), kind="stable")] = np.arange(1, len(proba) + 1)
    return ranks


def set_threads(estimator, n_jobs: int) -> None:
    """Score with `n_jobs` threads whatever the model was trained with."""
    if "n_jobs" in estimator.get_params():
        estimator.set_params(n_jobs=n_jobs)


def probabilities(estimator, values: np.ndarray, features: pd.DataFrame, n_jobs: int) -> np.ndarray:
    """Churn probability per row. A LightGBM model is asked through its booster (the same
    numbers as `predict_proba`, without scikit-learn's checks of a 1,000,000-row frame)."""
    booster = getattr(estimator, "booster_", None)
    if type(estimator).__module__.startswith("lightgbm") and booster is not None:
        return booster.predict(values, num_threads=n_jobs)
    return estimator.predict_proba(features)[:, 1]


@dataclass
class Scores:
    """The scored table (carried columns first, then SCORE_COLUMNS) and what it holds."""

    table: pd.DataFrame
    n_flagged: int
    n_reasons: int
    band_shares: dict
    reason_method: str | None
    timings: dict = field(default_factory=dict)
    action_shares: dict = field(default_factory=dict)  # measure name -> share of customers


def score_customers(pipeline, threshold: float, X: pd.DataFrame, carried: pd.DataFrame,
                    risk_bands: Mapping, catalogue: Catalogue, reasons: str = "flagged",
                    n_jobs: int = 2, batch_rows: int = 250_000,
                    segments: pd.DataFrame | None = None, labels: Mapping | None = None,
                    progress: Callable[[str], None] | None = None,
                    negative_labels: Mapping | None = None,
                    reason_method: str = "compiled") -> Scores:
    """Score validated customers `X` (the raw columns: the model's input and the catalogue's
    conditions); `carried` (same rows) holds the columns copied through, `segments` (same
    rows) the segment id and name when a segmentation model is used, `labels` and
    `negative_labels` the plain names the reasons use (conf/data/gym.yaml)."""
    from gymchurn.churn.reasons import (
        contribution_method,
        contributions,
        model_input,
        reason_values,
        reason_words,
    )

    if reasons not in REASON_CHOICES:
        raise GymchurnError(f"reasons={reasons} is not an option: use one of {REASON_CHOICES}.")
    bands, cuts = band_cuts(risk_bands, threshold)
    estimator = pipeline[-1]
    method_name, method = contribution_method(estimator, reason_method) if reasons != "none" \
        else (None, None)
    set_threads(estimator, n_jobs)
    timings = {}

    t = time.monotonic()
    features = model_input(pipeline, X)
    values = features.to_numpy(dtype=np.float64)  # also the reasons' input
    proba = probabilities(estimator, values, features, n_jobs)
    flag = proba >= threshold
    band = band_index(proba, cuts)
    out = carried.reset_index(drop=True)
    out[ROW_COLUMN] = np.arange(1, len(out) + 1)
    out[RANK_COLUMN] = priority_ranks(proba)
    out[PROBABILITY_COLUMN] = proba
    out["churn_flag"] = flag.astype(np.int8)
    out["risk_band"] = pd.Categorical.from_codes(band, categories=bands)
    timings["score"] = time.monotonic() - t
    if segments is not None:
        out["segment"] = segments["segment"].to_numpy()
        out["segment_name"] = segments["segment_name"].to_numpy()

    n_reasons = 0
    if reasons != "none":
        t = time.monotonic()
        rows = np.flatnonzero(flag) if reasons == "flagged" else np.arange(len(X))
        n_reasons = len(rows)
        texts = [[]] * len(REASON_COLUMNS)
        if n_reasons:
            chosen = pd.DataFrame(values[rows], columns=features.columns)
            report = (lambda done, total: progress(f"          reasons {done:,}/{total:,}")) \
                if progress else None
            effects = contributions(method, chosen, n_jobs=n_jobs, batch_rows=batch_rows,
                                    progress=report)
            shown = reason_values(pipeline, X.iloc[rows], chosen)  # unscaled, for people
            texts = reason_words(effects, shown, labels, negative_labels=negative_labels)
        for column, column_texts in zip(REASON_COLUMNS, texts, strict=True):
            filled = np.full(len(out), None, dtype=object)
            filled[rows] = column_texts
            out[column] = filled
        timings["reasons"] = time.monotonic() - t

    t = time.monotonic()
    measures, out[ACTION_COLUMN] = suggested_actions(X, catalogue)
    timings["actions"] = time.monotonic() - t
    shares = np.bincount(band, minlength=len(bands)) / len(band)
    names, counts = np.unique(measures, return_counts=True)
    return Scores(out, int(flag.sum()), n_reasons, dict(zip(bands, shares, strict=True)),
                  method_name, timings, dict(zip(names.tolist(), (counts / len(X)).tolist(),
                                                 strict=True)))
