"""The churn target's classes, checked before any split: a table with one class (every customer
stayed) or too few of one class cannot give a stratified holdout and k-fold cross-validation.

Without this check the split fails inside scikit-learn, or every Optuna trial fails and the
study ends with a message about the model's search space.
"""

from __future__ import annotations

import math

import pandas as pd

from gymchurn.errors import GymchurnError


def check_classes(y: pd.Series, test_size: float, folds: int = 1,
                  settings: str = "tune.folds or split.test_size") -> None:
    """Both classes of `y`, each with enough customers for a stratified holdout of `test_size`
    (at least one in it) and `folds`-fold cross-validation of the rest (1: none). `settings`:
    the options the message suggests changing."""
    counts = y.value_counts().sort_index()
    name = y.name
    if len(counts) < 2:
        only = (f"only {name}={counts.index[0]} (all {counts.iloc[0]} customers)" if len(counts)
                else f"no {name} values")
        raise GymchurnError(
            f"the training data has {only}: a churn model needs customers who left and customers "
            f"who stayed. Check data.path: is it the full customer table, not a filtered extract?"
        )
    # A stratified split rounds each class's holdout share up or down by one customer.
    need = math.ceil(max((folds + 1) / (1 - test_size), 1 / test_size + 1))
    if counts.min() < need:
        rare = counts.idxmin()
        cv = f" and {folds}-fold cross-validation" if folds > 1 else ""
        raise GymchurnError(
            f"the training data has only {counts.min()} customer(s) with {name}={rare}: a "
            f"stratified holdout of {test_size:g}{cv} needs at least {need} of each class. Use a "
            f"larger table, or change {settings}."
        )


def check_training_classes(customers: pd.DataFrame, cfg) -> None:
    """`check_classes` for a churn experiment: its split, tuning folds and repeated CV folds."""
    folds = int(cfg.tune.folds)
    if int(cfg.evaluation.repeated_cv_repeats) > 0:
        folds = max(folds, int(cfg.evaluation.repeated_cv_folds))
    check_classes(customers[cfg.data.target], float(cfg.split.test_size), folds)
