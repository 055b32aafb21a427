"""What a segmentation trial is scored on: separation, findability, distinctness, churn
spread, constraints; the multi-objective Optuna objective.

Why several objectives: silhouette alone rewards splitting customers on one binary column
(two groups, silhouette near 1, nothing learned) or on three near-copies of contract length.
The study also asks how faithfully each segment's rule reproduces its cluster, on how many
column groups the least distinct segment stands out, and how safe the safest and how risky the
riskiest segment is, under constraints (number of segments, smallest share).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.pipeline import Pipeline

from gymchurn.errors import GymchurnError
from gymchurn.segments import COLUMN_SUBSET_PARAM
from gymchurn.segments.model import scaled_inputs
from gymchurn.segments.rules import distinct_groups, rule_fidelity
from gymchurn.tuning import recording_failures, suggest_params

# Scores a study can optimise, with their direction. All are computed for every trial.
OBJECTIVES = {
    "silhouette": "maximize",          # how well separated the segments are (-1 .. 1)
    "rule_fidelity_min": "maximize",   # worst recall/precision of a rule against its cluster
    "distinct_columns_min": "maximize",  # column groups the least distinct segment stands out on
    "churn_rate_best_segment": "minimize",
    "churn_rate_worst_segment": "maximize",
    "churn_range": "maximize",         # churn rate of the worst segment minus the best one
    "davies_bouldin": "minimize",
    "calinski_harabasz": "maximize",
    "n_segments": "minimize",          # fewer portraits are easier to act on
}


def segment_sizes(labels) -> tuple[np.ndarray, np.ndarray]:
    segments, counts = np.unique(np.asarray(labels), return_counts=True)
    return segments, counts


def segment_scores(X, labels, churn, silhouette_sample_size: int | None = None,
                   seed: int = 0) -> dict[str, float]:
    """Every score of one segmentation, under the same keys for every algorithm.

    Separation scores use `X` (the clustered columns as the clusterer saw them); churn scores
    use `churn`, which the clustering never saw. Raises ValueError for fewer than 2 segments,
    where separation is undefined.
    """
    labels = np.asarray(labels)
    churn = np.asarray(churn, dtype=float)
    segments, counts = segment_sizes(labels)
    if len(segments) < 2:
        raise ValueError(f"the clustering found {len(segments)} segment; at least 2 are needed")
    rates = np.array([churn[labels == s].mean() for s in segments])
    X = np.asarray(X, dtype=float)
    sample = silhouette_sample_size if silhouette_sample_size and silhouette_sample_size < len(X) \
        else None
    return {
        "silhouette": float(silhouette_score(X, labels, sample_size=sample, random_state=seed)),
        "davies_bouldin": float(davies_bouldin_score(X, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(X, labels)),
        "n_segments": float(len(segments)),
        "min_segment_share": float(counts.min() / len(labels)),
        "churn_rate_best_segment": float(rates.min()),
        "churn_rate_worst_segment": float(rates.max()),
        "churn_range": float(rates.max() - rates.min()),
    }


def findability_scores(customers: pd.DataFrame, segments, clusters, groups: Mapping[str, str],
                       min_effect: float) -> dict[str, float]:
    """How findable and distinct the segments are: the worst rule fidelity (segments = rules,
    against the clusters they describe) and the distinct column groups of the least distinct
    segment, over every customer column."""
    distinct = distinct_groups(customers, segments, dict(groups), min_effect)
    return {"rule_fidelity_min": float(rule_fidelity(segments, clusters)["fidelity"].min()),
            "distinct_columns_min": float(min(len(c) for c in distinct.values()))}


def constraint_values(labels, min_segments: int, max_segments: int,
                      min_segment_share: float) -> dict[str, float]:
    """Optuna constraint values of a segmentation: it is feasible when every value is <= 0."""
    segments, counts = segment_sizes(labels)
    return {
        "min_segments": float(min_segments - len(segments)),
        "max_segments": float(len(segments) - max_segments),
        "min_segment_share": float(min_segment_share - counts.min() / counts.sum()),
    }



def check_objectives(objectives: Sequence[str]) -> list[str]:
    objectives = list(objectives)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if not objectives or unknown or len(set(objectives)) != len(objectives):
        raise GymchurnError(
            f"segmentation.objectives must be distinct names from {sorted(OBJECTIVES)}, "
            f"got {objectives}."
        )
    return objectives


def make_objective(
    X: pd.DataFrame,
    churn: pd.Series,
    subsets: Mapping[str, Sequence[str]],
    space: Mapping,
    build: Callable[[Sequence[str], dict], Pipeline],
    objectives: Sequence[str],
    constraints: Mapping,
    groups: Mapping[str, str],
    min_effect: float = 0.5,
    silhouette_sample_size: int | None = None,
    seed: int = 0,
) -> Callable[[optuna.Trial], list[float]]:
    """Objective: fit one segmentation, return its objective scores, set its constraints.

    `X` holds every customer column (distinctness is measured on all of them); `groups` maps
    each column to its group of near duplicates (segments.rules.column_groups).

    Optuna chooses a column subset (by name) and the clusterer's arguments. Every score is kept
    as a user attribute, so the Pareto front table can show them all.
    """
    objectives = check_objectives(objectives)

    def evaluate(trial: optuna.Trial) -> list[float]:
        subset = trial.suggest_categorical(COLUMN_SUBSET_PARAM, list(subsets))
        params = suggest_params(trial, space)
        previous = _same_params_done(trial)
        if previous is not None:
            # A discrete space makes repeats likely; the fit is deterministic, so reuse it.
            for key, value in previous.constraints.items():
                trial.set_constraint(key, value)
            for key, value in previous.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("repeat_of", previous.number)
            return list(previous.values)
        model = build(subsets[subset], params).fit(X)
        labels = model[-1].labels_
        scores = segment_scores(scaled_inputs(model, X), labels, churn,
                                silhouette_sample_size, seed)
        scores.update(findability_scores(X, labels, model[-1].clusters_, groups, min_effect))
        for key, value in constraint_values(labels, **constraints).items():
            trial.set_constraint(key, value)
        for key, value in scores.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("repeat_of", None)
        return [scores[name] for name in objectives]

    return recording_failures(evaluate)


def _same_params_done(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    for done in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if done.params == trial.params and done.number != trial.number:
            return done
    return None

