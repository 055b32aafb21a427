"""Choosing the final segmentation: the Pareto front, ranked by the configured rule, then the
first candidate stable enough under bootstrap refits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import Pipeline

from gymchurn.errors import GymchurnError
from gymchurn.segments import COLUMN_SUBSET_PARAM
from gymchurn.segments.objectives import OBJECTIVES
from gymchurn.tuning import is_feasible

SELECTION_RULES = ("threshold", "knee")


def pareto_front(study: optuna.Study, objectives: Sequence[str]) -> pd.DataFrame:
    """The feasible, non-dominated solutions with every score and parameter, one row each
    (a repeated trial of the same parameters is listed once, as its first trial)."""
    rows = []
    for trial in study.best_trials:
        if trial.user_attrs.get("repeat_of") is not None:
            continue
        scores = {k: v for k, v in trial.user_attrs.items()
                  if k not in ("error", "repeat_of", "interrupted") and isinstance(v, (int, float))
                  and not isinstance(v, bool)}
        row = {"trial": trial.number, **scores,
               **dict(zip(objectives, trial.values, strict=True)), **trial.params}
        rows.append(row)
    columns = ["trial", *objectives]
    front = pd.DataFrame(rows)
    if front.empty:
        return front
    rest = [c for c in front.columns if c not in columns]
    return front[columns + rest].sort_values(list(objectives[:1]),
                                             ascending=OBJECTIVES[objectives[0]] == "minimize")


def requirement_shortfall(front: pd.DataFrame, require: Mapping[str, float]) -> pd.Series:
    """How far each solution is from meeting the requirements (0 = meets them all).

    A requirement asks an objective to be at least as good as a value, in its direction
    (>= when maximised, <= when minimised). Each miss is measured in units of that objective's
    spread over the front, so misses on different scales add up fairly.
    """
    total = pd.Series(0.0, index=front.index)
    for name, bound in (require or {}).items():
        values = front[name].astype(float)
        miss = (bound - values) if OBJECTIVES[name] == "maximize" else (values - bound)
        spread = float(values.max() - values.min()) or 1.0
        total += miss.clip(lower=0) / spread
    return total


def rank_front(front: pd.DataFrame, rule: str, objectives: Sequence[str],
               require: Mapping[str, float] | None = None,
               prefer: str = "silhouette") -> pd.DataFrame:
    """Order the Pareto front by the selection rule, best candidate first.

    Solutions meeting every requirement come first; if none does, the nearest misses
    (smallest `requirement_shortfall`) do, so a fallback is never chosen for excelling on one
    objective while failing another. Requirements and preferences are on objectives, so choosing
    from the front loses nothing: a solution that dominates another meets every requirement it
    meets. Among solutions meeting the requirements:
      threshold: best `prefer` objective first (an epsilon-constraint choice: e.g. the best
          separated segmentation among those whose churn rates differ enough);
      knee: closest to the ideal point once each objective is scaled to 0 (worst) .. 1 (best)
          over those solutions: the most balanced trade-off.
    Adds `shortfall` and `meets_requirements` columns.
    """
    if front.empty:
        return front
    shortfall = requirement_shortfall(front, dict(require or {}))
    ranked = front.assign(shortfall=shortfall, meets_requirements=shortfall == 0)
    if rule == "threshold":
        key = front[prefer] if OBJECTIVES[prefer] == "maximize" else -front[prefer]
        ranked = ranked.assign(_key=key).sort_values(
            ["shortfall", "_key", "trial"], ascending=[True, False, True])
        return ranked.drop(columns="_key")
    if rule == "knee":
        pool = ranked[ranked["shortfall"] == ranked["shortfall"].min()]
        distance = np.zeros(len(ranked))
        for name in objectives:
            sign = 1.0 if OBJECTIVES[name] == "maximize" else -1.0
            values, reference = sign * ranked[name].to_numpy(float), sign * pool[name].to_numpy(float)
            spread = reference.max() - reference.min()
            scaled = (values - reference.min()) / spread if spread > 0 else np.ones_like(values)
            distance += (1 - scaled) ** 2
        ranked = ranked.assign(_distance=np.sqrt(distance)).sort_values(
            ["shortfall", "_distance", "trial"], ascending=[True, True, True])
        return ranked.drop(columns="_distance")
    raise GymchurnError(f"unknown segmentation.selection.rule '{rule}'. Use one of "
                        f"{list(SELECTION_RULES)}.")


def choose_solution(ranked: pd.DataFrame, stability: Callable[[int], np.ndarray],
                    min_stability: float, max_candidates: int) -> tuple[int, pd.DataFrame]:
    """Bootstrap the ranked candidates in order (at most `max_candidates`) and choose one.

    Requirements come first, then stability, then the rule's order: the first candidate that
    meets the requirements and reaches `min_stability` wins. Without one, the smallest
    requirement shortfall wins, and among equal shortfalls a stable candidate in rule order,
    else the most stable. (Stability never trades a requirement for a trap: a segmentation split
    on one binary column is perfectly stable.) Returns the chosen trial number and the table
    of candidates checked, with their mean and spread of ARI.
    """
    checked = []
    for rank, (_, row) in enumerate(ranked.head(max(1, max_candidates)).iterrows()):
        aris = stability(int(row["trial"]))
        checked.append({**row.to_dict(), "rank": rank, "stability_ari_mean": float(np.mean(aris)),
                        "stability_ari_std": float(np.std(aris)), "_aris": aris})
        if row.get("shortfall", 0) == 0 and np.mean(aris) >= min_stability:
            break
    table = pd.DataFrame(checked)
    stable = table["stability_ari_mean"] >= min_stability
    order = table.assign(
        _unstable=~stable,
        _tiebreak=np.where(stable, table["rank"], -table["stability_ari_mean"]),
        _shortfall=table.get("shortfall", pd.Series(0.0, index=table.index)),
    ).sort_values(["_shortfall", "_unstable", "_tiebreak"])
    chosen = int(order.iloc[0]["trial"])
    table["chosen"] = table["trial"] == chosen
    return chosen, table


def best_per_subset(study) -> pd.DataFrame:
    """For each column subset: trials, feasible trials, and the best feasible silhouette and
    churn range (each on its own): how the subsets compare within this study."""
    rows = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    for subset in sorted({t.params.get(COLUMN_SUBSET_PARAM) for t in complete}):
        own = [t for t in complete if t.params.get(COLUMN_SUBSET_PARAM) == subset]
        ok = [t for t in own if is_feasible(t.constraints)]
        rows.append({
            COLUMN_SUBSET_PARAM: subset, "trials": len(own), "feasible": len(ok),
            "best_silhouette": max((t.user_attrs["silhouette"] for t in ok), default=None),
            "best_churn_range": max((t.user_attrs["churn_range"] for t in ok), default=None),
        })
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- stability


def bootstrap_stability(build: Callable[[], Pipeline], X: pd.DataFrame, labels,
                        n_bootstraps: int, seed: int) -> np.ndarray:
    """Adjusted Rand index between `labels` and refits of the same pipeline on bootstrap
    resamples, each refit assigning every customer. 1 = the same partition every time."""
    rng = np.random.default_rng(seed)
    aris = []
    for _ in range(n_bootstraps):
        rows = rng.integers(0, len(X), len(X))
        refit = build().fit(X.iloc[rows])
        aris.append(adjusted_rand_score(labels, refit.predict(X)))
    return np.asarray(aris, dtype=float)
