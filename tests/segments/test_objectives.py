"""What a segmentation trial is scored on: separation and churn scores, constraints, the
multi-objective Optuna objective (gymchurn.segments.objectives)."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from gymchurn.config import compose_config
from gymchurn.data import feature_columns
from gymchurn.segments.model import build_segmentation
from gymchurn.segments.objectives import (
    constraint_values,
    findability_scores,
    make_objective,
    segment_scores,
)
from gymchurn.segments.rules import column_groups
from gymchurn.tuning import is_feasible

CONSTRAINTS = {"min_segments": 3, "max_segments": 8, "min_segment_share": 0.05}


def blobs(sizes, seed=0):
    """Well separated 2-D groups with known sizes and labels."""
    rng = np.random.default_rng(seed)
    centres = [(0, 0), (10, 0), (0, 10), (10, 10), (20, 20)]
    X = np.vstack([rng.normal(centres[i], 0.5, (n, 2)) for i, n in enumerate(sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return X, labels


def test_scores_of_a_known_segmentation():
    X, labels = blobs([50, 30, 20])
    churn = np.r_[np.zeros(50), np.ones(30), np.r_[np.ones(5), np.zeros(15)]]
    scores = segment_scores(X, labels, churn)
    assert scores["silhouette"] > 0.9
    assert scores["n_segments"] == 3
    assert scores["min_segment_share"] == pytest.approx(0.2)
    assert scores["churn_rate_best_segment"] == 0.0
    assert scores["churn_rate_worst_segment"] == 1.0
    assert scores["churn_range"] == 1.0
    # Shuffled labels: same churn spread impossible to separate -> silhouette collapses.
    noisy = segment_scores(X, np.random.default_rng(1).permutation(labels), churn)
    assert noisy["silhouette"] < 0.1


def test_scores_need_two_segments():
    X, _ = blobs([20, 20])
    with pytest.raises(ValueError, match="1 segment"):
        segment_scores(X, np.zeros(40, dtype=int), np.zeros(40))


def test_constraints_reject_a_two_percent_segment():
    labels = np.r_[np.zeros(49), np.ones(49), np.full(2, 2)]  # 49 %, 49 %, 2 %
    values = constraint_values(labels, **CONSTRAINTS)
    assert values["min_segment_share"] == pytest.approx(0.03)
    assert not is_feasible(values)
    labels = np.r_[np.zeros(45), np.ones(45), np.full(10, 2)]  # 10 % is fine
    assert is_feasible(constraint_values(labels, **CONSTRAINTS))


def test_constraints_bound_the_number_of_segments():
    two = np.repeat([0, 1], 50)
    nine = np.repeat(np.arange(9), 12)
    assert constraint_values(two, **CONSTRAINTS)["min_segments"] == 1
    assert constraint_values(nine, **CONSTRAINTS)["max_segments"] == 1
    assert not is_feasible(constraint_values(two, **CONSTRAINTS))
    assert not is_feasible(constraint_values(nine, **CONSTRAINTS))


def test_objective_returns_every_objective_and_sets_constraints(customers):
    cfg = compose_config("segment", [])
    X, churn = customers[feature_columns(cfg.data)], customers["Churn"]
    subsets = {"tenure_groups_referral": list(cfg.segmentation.column_subsets.tenure_groups_referral)}
    objectives = ["silhouette", "rule_fidelity_min", "distinct_columns_min", "churn_range"]
    objective = make_objective(
        X, churn, subsets, {"n_clusters": {"type": "int", "low": 3, "high": 4}},
        lambda cols, params: build_segmentation(cfg.clustering, cols, params, cfg.segmentation.rules),
        objectives, CONSTRAINTS, column_groups(X),
    )
    study = optuna.create_study(directions=["maximize"] * len(objectives))
    for _ in range(2):  # the same parameters twice: the second reuses the first
        study.enqueue_trial({"column_subset": "tenure_groups_referral", "n_clusters": 3})
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert len(first.values) == 4 and -1 <= first.values[0] <= 1
    assert first.values[1] == pytest.approx(first.user_attrs["rule_fidelity_min"])
    assert 0 < first.values[1] <= 1 and first.values[2] == int(first.values[2]) >= 0
    assert first.values[3] == pytest.approx(first.user_attrs["churn_range"])
    assert set(first.constraints) == {"min_segments", "max_segments", "min_segment_share"}
    assert first.user_attrs["n_segments"] == 3
    assert second.user_attrs["repeat_of"] == first.number
    assert second.values == first.values and second.constraints == first.constraints


def test_findability_scores_compare_rules_with_clusters_and_count_distinct_groups():
    rng = np.random.default_rng(0)
    customers = pd.DataFrame({"a": np.repeat([0.0, 1.0], 50), "b": rng.normal(0, 1, 100)})
    customers["a_copy"] = customers["a"]  # a near duplicate: counted once
    clusters = np.repeat([0, 1], 50)
    groups = column_groups(customers)
    perfect = findability_scores(customers, clusters, clusters, groups, 0.5)
    assert perfect == {"rule_fidelity_min": 1.0, "distinct_columns_min": 1.0}
    rules = clusters.copy()
    rules[:10] = 1  # the rule for segment 1 also takes 10 of cluster 0's 50 members
    worse = findability_scores(customers, rules, clusters, groups, 0.5)
    # Segment 0 selects 40 of its cluster's 50 (recall 0.8); segment 1 holds 50 of 60 (0.83).
    assert worse["rule_fidelity_min"] == pytest.approx(40 / 50)
