"""Churn evaluation: metrics on probabilities, the decision threshold, and the cross-validation
every tuning trial runs (folds, the per-fold objective and its pruning)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from sklearn import metrics as skm

from gymchurn.churn.evaluate import (
    TUNING_METRICS,
    choose_threshold,
    classification_metrics,
    cv_folds,
    make_objective,
    tuning_metric,
)
from gymchurn.errors import GymchurnError


@pytest.fixture
def scored():
    """300 labels and noisy but informative probabilities, with ties."""
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.3).astype(int)
    proba = np.clip(0.25 + 0.3 * y + rng.normal(0, 0.2, 300), 0, 1).round(2)
    return y, proba


def f1_at(y, proba, threshold):
    return skm.f1_score(y, (proba >= threshold).astype(int), zero_division=0)


def cost_at(y, proba, threshold, cost_ratio):
    flagged = proba >= threshold
    return cost_ratio * np.sum((y == 1) & ~flagged) + np.sum((y == 0) & flagged)


def every_cut(proba):
    """Thresholds giving every distinct flagged set: each distinct value, and above the max."""
    return np.r_[np.unique(proba), np.nextafter(proba.max(), np.inf)]


def test_classification_metrics_agree_with_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    proba = np.array([0.1, 0.6, 0.7, 0.4, 0.2, 0.9, 0.5, 0.55])
    got = classification_metrics(y, proba, threshold=0.5)
    pred = (proba >= 0.5).astype(int)
    assert pred.tolist() == [0, 1, 1, 0, 0, 1, 1, 1]  # 0.5 itself counts as churn
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, proba),
        "pr_auc": skm.average_precision_score(y, proba),
        "log_loss": skm.log_loss(y, proba),
        "brier": skm.brier_score_loss(y, proba),
    }
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    assert got["precision"] == pytest.approx(3 / 5) and got["recall"] == pytest.approx(3 / 4)


def test_classification_metrics_with_nobody_flagged_do_not_fail():
    y = np.array([0, 1, 0, 1])
    got = classification_metrics(y, np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.9)
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["f1"] == 0.0
    assert got["roc_auc"] == pytest.approx(0.75)


def test_f1_threshold_reaches_the_best_f1(scored):
    y, proba = scored
    threshold = choose_threshold(y, proba, rule="f1")
    best = max(f1_at(y, proba, t) for t in every_cut(proba))
    assert f1_at(y, proba, threshold) == pytest.approx(best)
    assert 0 < threshold < 1


def test_f1_threshold_lies_between_probabilities():
    y = np.array([1, 1, 0, 1, 0, 0])
    proba = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.1])
    # Best F1 flags the top 4 (F1 = 6/7); the cut is halfway between 0.6 and 0.3.
    assert choose_threshold(y, proba, rule="f1") == pytest.approx(0.45)


def test_cost_threshold_reaches_the_lowest_cost(scored):
    y, proba = scored
    for ratio in (1.0, 3.0, 10.0):
        threshold = choose_threshold(y, proba, rule="cost", cost_ratio=ratio)
        best = min(cost_at(y, proba, t, ratio) for t in every_cut(proba))
        assert cost_at(y, proba, threshold, ratio) == pytest.approx(best), ratio


def test_higher_cost_ratio_gives_lower_or_equal_threshold(scored):
    y, proba = scored
    ratios = [0.5, 1, 2, 5, 10, 50]
    thresholds = [choose_threshold(y, proba, rule="cost", cost_ratio=r) for r in ratios]
    assert all(a >= b for a, b in zip(thresholds, thresholds[1:], strict=False))
    assert thresholds[0] > thresholds[-1]  # the ratio matters on this data


def test_cost_threshold_may_flag_nobody():
    y = np.array([0, 1])
    proba = np.array([0.9, 0.1])
    # Flag nobody: one missed churner, cost 0.5. Any flagging costs at least 1.
    threshold = choose_threshold(y, proba, rule="cost", cost_ratio=0.5)
    assert cost_at(y, proba, threshold, 0.5) == pytest.approx(0.5)


def test_unknown_threshold_rule_is_a_user_error(scored):
    y, proba = scored
    with pytest.raises(GymchurnError, match="unknown threshold.rule 'youden'.*'f1' or 'cost'"):
        choose_threshold(y, proba, rule="youden")


def test_non_positive_cost_ratio_is_a_user_error(scored):
    y, proba = scored
    with pytest.raises(GymchurnError, match="cost_ratio must be > 0"):
        choose_threshold(y, proba, rule="cost", cost_ratio=0)


def test_unknown_tuning_metric_names_the_choices():
    with pytest.raises(GymchurnError) as info:
        tuning_metric("accuracy")
    message = str(info.value)
    assert "'accuracy'" in message
    for name in TUNING_METRICS:
        assert name in message


@pytest.mark.parametrize(("name", "direction"), [("roc_auc", "maximize"), ("pr_auc", "maximize"),
                                                 ("log_loss", "minimize"), ("brier", "minimize")])
def test_tuning_metric_directions(name, direction):
    score, got = tuning_metric(name)
    assert got == direction
    y = np.array([0, 1, 0, 1])
    good, bad = np.array([0.1, 0.9, 0.2, 0.8]), np.array([0.9, 0.1, 0.8, 0.2])
    better = score(y, good) > score(y, bad)
    assert better == (direction == "maximize")


# ---------------------------------------------------------------- cross-validation


def in_memory_study(direction="maximize", pruner=None):
    return optuna.create_study(direction=direction, pruner=pruner or optuna.pruners.NopPruner())


def test_bad_candidate_is_pruned_before_its_last_fold(churn_xy, logreg):
    X, y = churn_xy
    folds = cv_folds(y, 3, 0)
    space = {"C": {"type": "categorical", "choices": [1.0, 1e-6]}}
    # log_loss: C=1e-6 shrinks every weight to ~0, so it predicts about the base rate everywhere.
    objective = make_objective(X, y, folds, space, "log_loss", logreg)
    study = in_memory_study(
        "minimize", optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    )
    study.enqueue_trial({"C": 1.0})
    study.enqueue_trial({"C": 1e-6})
    study.optimize(objective, n_trials=2)
    good, bad = study.trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == len(folds)
    assert bad.params == {"C": 1e-6}
    assert bad.state == TrialState.PRUNED
    assert len(bad.intermediate_values) < len(folds)
    assert "cv_std" not in bad.user_attrs and "error" not in bad.user_attrs


def test_objective_value_is_the_mean_fold_score(churn_xy, logreg):
    from sklearn.metrics import roc_auc_score

    X, y = churn_xy
    folds = cv_folds(y, 3, 0)
    objective = make_objective(X, y, folds, {}, "roc_auc", logreg)
    study = in_memory_study()
    study.optimize(objective, n_trials=1)
    scores = []
    for train_idx, valid_idx in folds:
        model = logreg({}).fit(X.iloc[train_idx], y.iloc[train_idx])
        scores.append(roc_auc_score(y.iloc[valid_idx], model.predict_proba(X.iloc[valid_idx])[:, 1]))
    assert study.best_value == pytest.approx(sum(scores) / len(scores))
    assert study.trials[0].intermediate_values[0] == pytest.approx(scores[0])


def test_cv_folds_are_stratified_and_cover_every_row(churn_xy):
    _, y = churn_xy
    folds = cv_folds(y, 4, 1)
    assert len(folds) == 4
    valid = sorted(i for _, v in folds for i in v)
    assert valid == list(range(len(y)))
    rate = y.mean()
    for _, v in folds:
        assert abs(y.iloc[v].mean() - rate) < 0.05
    assert [v.tolist() for _, v in cv_folds(y, 4, 1)] == [v.tolist() for _, v in folds]
