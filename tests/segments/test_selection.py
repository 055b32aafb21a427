"""Choosing the final segmentation from the Pareto front: selection rules, requirements,
bootstrap stability (gymchurn.segments.selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.errors import GymchurnError
from gymchurn.segments.selection import choose_solution, rank_front


def front_table():
    return pd.DataFrame({
        "trial": [0, 1, 2, 3],
        "silhouette": [0.95, 0.60, 0.52, 0.45],       # 0 is the binary-column trap
        "churn_range": [0.30, 0.55, 0.66, 0.70],
    })


def test_threshold_rule_picks_best_separated_solution_meeting_requirements():
    ranked = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                        {"silhouette": 0.5, "churn_range": 0.47}, "silhouette")
    assert ranked["trial"].tolist()[:2] == [1, 2]
    assert ranked["meets_requirements"].tolist() == [True, True, False, False]


def test_unmet_requirements_fall_back_to_the_nearest_miss_not_the_trap():
    ranked = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                        {"silhouette": 0.7, "churn_range": 0.6}, "silhouette")
    assert not ranked["meets_requirements"].any()
    # Misses in units of each objective's spread on the front (0.5 and 0.4):
    # trial 1: 0.1/0.5 + 0.05/0.4 = 0.325 < trial 2: 0.36 < trial 3: 0.5 < the trap: 0.75.
    assert ranked["trial"].tolist() == [1, 2, 3, 0]
    assert ranked["shortfall"].iloc[0] == pytest.approx(0.325)


def test_knee_rule_prefers_a_balanced_solution():
    ranked = rank_front(front_table(), "knee", ["silhouette", "churn_range"], {}, "silhouette")
    assert ranked["trial"].iloc[0] in (1, 2)
    with pytest.raises(GymchurnError, match="selection.rule"):
        rank_front(front_table(), "best", ["silhouette"])


def test_stability_is_checked_in_order_and_never_beats_requirements():
    front = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                       {"silhouette": 0.5, "churn_range": 0.47}, "silhouette")
    ari = {0: 1.0, 1: 0.7, 2: 0.95, 3: 0.99}
    chosen, checked = choose_solution(front, lambda t: np.full(3, ari[t]), 0.9, 3)
    assert chosen == 2 and checked["trial"].tolist() == [1, 2]  # stops at the first stable
    # Nothing meets the requirements: the nearest miss wins even though the trap is stabler.
    front = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                       {"silhouette": 0.7, "churn_range": 0.6}, "silhouette")
    chosen, checked = choose_solution(front, lambda t: np.full(3, ari[t]), 0.9, 4)
    assert chosen == 1 and len(checked) == 4
    assert checked.loc[checked["chosen"], "stability_ari_mean"].item() == pytest.approx(0.7)
