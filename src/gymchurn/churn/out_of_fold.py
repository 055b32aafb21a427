"""Out-of-fold scores: every customer's churn probability (and, for the rows asked, top reasons
in words) from a copy of the pipeline fitted without that customer.

The report scores the customers the champion was trained on. Asking the champion itself would
show how well it remembers them, not how it judges a customer it has not seen; here each fold
of a stratified k-fold split is scored by `sklearn.base.clone(pipeline)` fitted on the other
folds: the same family and hyperparameters, never the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from gymchurn.churn.reasons import (
    REASON_COLUMNS,
    contribution_method,
    contributions,
    model_input,
    reason_values,
    reason_words,
)
from gymchurn.errors import GymchurnError, interruption_point


@dataclass
class OutOfFold:
    proba: np.ndarray           # each row's churn probability from the model that did not see it
    reasons: list[np.ndarray]   # reason_1..3 in words; None where not asked or not risk-raising
    fold: np.ndarray            # each row's fold (0 .. n_folds - 1)


def use_threads(estimator, n_jobs: int) -> None:
    """Fit with `n_jobs` threads when the family uses threads (its n_jobs is set in
    conf/model/: LightGBM, XGBoost, random forest); logistic regression's n_jobs does nothing
    and scikit-learn warns when it is set."""
    if estimator.get_params().get("n_jobs") is not None:
        estimator.set_params(n_jobs=n_jobs)


def check_fold_classes(y: np.ndarray, n_folds: int, name: str = "the target") -> None:
    """Both classes, each with at least `n_folds` customers: every fold's model must see
    customers who left and customers who stayed, and every fold holds some of each."""
    if n_folds < 2:
        raise GymchurnError(f"out-of-fold scores need at least 2 folds; got {n_folds}. Set "
                            "out_of_fold.folds to 2 or more.")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        only = f"only {name}={classes[0]}" if len(classes) else f"no {name} values"
        raise GymchurnError(
            f"the customer table has {only}: out-of-fold scores need customers who left and "
            "customers who stayed. Check data.path: is it the full customer table?")
    if counts.min() < n_folds:
        raise GymchurnError(
            f"the customer table has only {counts.min()} customer(s) with {name}="
            f"{classes[counts.argmin()]}: {n_folds}-fold out-of-fold scores need at least "
            f"{n_folds} of each class. Use a larger table, or fewer folds (out_of_fold.folds).")


def out_of_fold(pipeline, X: pd.DataFrame, y, n_folds: int, seed: int,
                reason_rows: np.ndarray | None = None, labels: Mapping[str, str] | None = None,
                n_jobs: int = 2, negative_labels: Mapping[str, str] | None = None) -> OutOfFold:
    """Score every row of X with a clone of `pipeline` fitted on the other folds of a
    stratified `n_folds`-fold split (shuffled with `seed`: the same seed, the same folds and
    scores). `reason_rows` (a boolean mask over the rows): whose top three reasons to word,
    from the exact contributions of their own fold's model (gymchurn.churn.reasons), with the
    plain names in `labels` and `negative_labels`. Ctrl-C stops between folds
    (gymchurn.errors.interruption_point)."""
    name = getattr(y, "name", None) or "the target"
    y, n_folds = np.asarray(y), int(n_folds)
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows and y {len(y)}")
    check_fold_classes(y, n_folds, name)
    wanted = np.zeros(len(X), dtype=bool) if reason_rows is None else np.asarray(reason_rows, bool)
    if wanted.shape != (len(X),):
        raise ValueError(f"reason_rows must be a boolean mask of the {len(X)} rows")

    proba = np.full(len(X), np.nan)
    fold = np.full(len(X), -1, dtype=np.int64)
    reasons = [np.full(len(X), None, dtype=object) for _ in REASON_COLUMNS]
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (train, held) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        interruption_point()  # a safe point before each fold: nothing is half-fitted here
        model = clone(pipeline)
        use_threads(model[-1], n_jobs)
        model.fit(X.iloc[train], y[train])
        features = model_input(model, X.iloc[held])
        proba[held] = model[-1].predict_proba(features)[:, 1]
        fold[held] = k
        explain = wanted[held]
        if explain.any():
            chosen = features[explain]
            _, method = contribution_method(model[-1])
            effects = contributions(method, chosen, n_jobs=n_jobs)
            shown = reason_values(model, X.iloc[held[explain]], chosen)
            words = reason_words(effects, shown, labels, negative_labels=negative_labels)
            for column, texts in zip(reasons, words, strict=True):
                column[held[explain]] = texts
    return OutOfFold(proba, reasons, fold)
