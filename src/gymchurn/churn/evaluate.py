"""Churn evaluation: metrics on probabilities, the decision threshold, and cross-validation
(the folds every trial shares, the tuning objective, repeated CV of the chosen pipeline)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from gymchurn.errors import GymchurnError, interruption_point

# Threshold-free metrics Optuna can tune on: name -> (function(y, proba), direction).
TUNING_METRICS = {
    "roc_auc": (roc_auc_score, "maximize"),
    "pr_auc": (average_precision_score, "maximize"),
    "log_loss": (log_loss, "minimize"),
    "brier": (brier_score_loss, "minimize"),
}


def tuning_metric(name: str):
    """(score function, direction) for a tuning metric, or a clear error naming the choices."""
    if name not in TUNING_METRICS:
        raise GymchurnError(
            f"unknown tuning metric '{name}'. Use tune.metric= one of {sorted(TUNING_METRICS)}."
        )
    return TUNING_METRICS[name]


def classification_metrics(y_true, proba, threshold: float) -> dict[str, float]:
    """Every metric a churn run reports, under the same keys for every model family."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=float)
    y_pred = (proba >= threshold).astype(int)
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, zero_division=0),
        "recall": recall_score(y_true, y_pred, zero_division=0),
        "f1": f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": roc_auc_score(y_true, proba),
        "pr_auc": average_precision_score(y_true, proba),
        "log_loss": log_loss(y_true, proba, labels=[0, 1]),
        "brier": brier_score_loss(y_true, proba),
    }


def choose_threshold(y_true, proba, rule: str = "f1", cost_ratio: float | None = None) -> float:
    """Decision threshold from (out-of-fold) probabilities.

    rule="f1": the threshold with the best F1.
    rule="cost": the threshold with the lowest cost, where a missed churner costs `cost_ratio`
    and a retention offer to a customer who would have stayed costs 1 (gymchurn.economics
    derives the ratio from what a call costs and a kept member is worth).
    """
    y_true = np.asarray(y_true).astype(int)
    proba = np.asarray(proba, dtype=float)
    order = np.argsort(-proba, kind="stable")
    p_sorted, y_sorted = proba[order], y_true[order]
    # Candidate i flags everyone with probability >= cuts[i]; only cuts between distinct
    # probabilities count. Candidate 0 flags nobody.
    last_of_value = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    cuts = p_sorted[last_of_value]
    tp = np.r_[0, np.cumsum(y_sorted)[last_of_value]]
    fp = np.r_[0, np.cumsum(1 - y_sorted)[last_of_value]]
    fn = y_true.sum() - tp
    if rule == "f1":
        score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        best = int(np.argmax(score))
    elif rule == "cost":
        if cost_ratio is None or cost_ratio <= 0:
            raise GymchurnError(f"threshold.cost_ratio must be > 0, got {cost_ratio}.")
        best = int(np.argmin(cost_ratio * fn + fp))
    else:
        raise GymchurnError(f"unknown threshold.rule '{rule}'. Use 'f1' or 'cost'.")
    if best == 0:
        return float(np.nextafter(cuts[0], np.inf))  # just above the highest probability
    # Halfway to the next lower probability: robust to tiny shifts in new predictions.
    lower = cuts[best] if best < len(cuts) else 0.0
    return float((cuts[best - 1] + lower) / 2)


# ---------------------------------------------------------------- cross-validation


def cv_folds(y, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stratified folds every trial, the threshold and the OOF metrics share."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def make_objective(X, y, folds: Sequence, space: Mapping, metric: str,
                   build: Callable[[dict], object]) -> Callable:
    """Optuna objective: mean CV score of the pipeline `build(params)`, reported (and pruned)
    per fold."""
    import optuna

    from gymchurn.tuning import recording_failures, suggest_params

    score, _ = tuning_metric(metric)

    def cross_validate(trial: optuna.Trial) -> float:
        params = suggest_params(trial, space)
        scores = []
        for step, (train_idx, valid_idx) in enumerate(folds):
            interruption_point()  # Ctrl-C stops the trial between folds (it is not counted)
            model = build(params)
            model.fit(X.iloc[train_idx], y.iloc[train_idx])
            proba = model.predict_proba(X.iloc[valid_idx])[:, 1]
            scores.append(float(score(y.iloc[valid_idx], proba)))
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("cv_std", float(np.std(scores)))
        return float(np.mean(scores))

    return recording_failures(cross_validate)


def repeated_cv_metrics(build, params, X, y, threshold, folds, repeats, seed) -> dict[str, float]:
    """Mean and spread of every metric over repeated stratified k-fold (training split only)."""
    import pandas as pd
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed + 1)
    rows = []
    for train_idx, valid_idx in splitter.split(X, y):
        interruption_point()
        model = build(params).fit(X.iloc[train_idx], y.iloc[train_idx])
        proba = model.predict_proba(X.iloc[valid_idx])[:, 1]
        rows.append(classification_metrics(y.iloc[valid_idx], proba, threshold))
    table = pd.DataFrame(rows)
    out = {f"rcv_{k}_mean": float(v) for k, v in table.mean().items()}
    out.update({f"rcv_{k}_std": float(v) for k, v in table.std(ddof=1).items()})
    return out
