"""Segmentation stage: customer portraits from clustering, tuned on several objectives at once.

The segmentation model is an sklearn Pipeline built by `gymchurn.pipeline.build_pipeline`
(select the clustered columns -> scale -> `SegmentAssigner`), so like the churn model it takes
the raw customer columns. Churn is never a clustering input: it only scores and describes the
segments.

Why several objectives: silhouette alone rewards splitting customers on one binary column
(two groups, silhouette near 1, nothing learned). The study maximises silhouette *and* how much
the segments differ in churn rate, under constraints (number of segments, smallest share); the
final solution is picked from the Pareto front by a rule in the config, then checked for
bootstrap stability.

Sections: the model class; scores, objectives and constraints; the Optuna study and its
trial logging; choosing from the Pareto front; stability; portraits and names; plots.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no screen on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from sklearn.base import BaseEstimator, ClusterMixin, clone  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_samples,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

from gymchurn.errors import GymchurnError  # noqa: E402
from gymchurn.tracking import TrialRunLogger  # noqa: E402
from gymchurn.tuning import finished_trials, open_storage, recording_failures, suggest_params  # noqa: E402

COLUMN_SUBSET_PARAM = "column_subset"  # the Optuna parameter that chooses the clustered columns

# Scores a study can optimise, with their direction. All are computed for every trial.
OBJECTIVES = {
    "silhouette": "maximize",          # how well separated the segments are (-1 .. 1)
    "churn_range": "maximize",         # churn rate of the worst segment minus the best one
    "davies_bouldin": "minimize",
    "calinski_harabasz": "maximize",
    "n_segments": "minimize",          # fewer portraits are easier to act on
}
SELECTION_RULES = ("threshold", "knee")


# ---------------------------------------------------------------- the model


class SegmentAssigner(ClusterMixin, BaseEstimator):
    """Cluster the rows it is fitted on, number the segments by size, assign new rows.

    `clusterer` is any sklearn clusterer. Segments are numbered 0, 1, ... from the largest, so
    ids do not depend on the clusterer's arbitrary label order. New rows go to the segment the
    clusterer predicts (k-means, Gaussian mixtures). Clusterers without `predict`
    (agglomerative) get a 1-nearest-neighbour assigner on the fitted rows: it reproduces the
    training labels exactly and extends them to new customers.
    """

    def __init__(self, clusterer=None):
        self.clusterer = clusterer

    def fit(self, X, y=None):
        if self.clusterer is None:
            raise ValueError("SegmentAssigner needs a clusterer.")
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        X = np.asarray(X, dtype=float)
        self.n_features_in_ = X.shape[1]
        clusterer = clone(self.clusterer)
        raw = np.asarray(clusterer.fit_predict(X))
        found, counts = np.unique(raw, return_counts=True)
        # Largest first; ties keep the clusterer's order (stable sort), so fits are repeatable.
        self.raw_labels_ = found[np.argsort(-counts, kind="stable")]
        self.labels_ = self._to_segments(raw)
        self.n_segments_ = len(self.raw_labels_)
        self.centroids_ = np.vstack([X[self.labels_ == s].mean(axis=0)
                                     for s in range(self.n_segments_)])
        self.clusterer_ = clusterer
        self.nearest_ = None
        if not hasattr(clusterer, "predict"):
            # Brute force keeps the saved model free of tree objects; 1-NN on a few thousand
            # rows is fast enough for scoring.
            self.nearest_ = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(
                X, self.labels_
            )
        return self

    def _to_segments(self, raw: np.ndarray) -> np.ndarray:
        """Clusterer labels -> segment ids; labels never seen in fit become -1."""
        lookup = {label: segment for segment, label in enumerate(self.raw_labels_.tolist())}
        return np.array([lookup.get(label, -1) for label in raw.tolist()], dtype=np.int64)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "labels_")
        X = np.asarray(X, dtype=float)
        if self.nearest_ is not None:
            return self.nearest_.predict(X).astype(np.int64)
        segments = self._to_segments(np.asarray(self.clusterer_.predict(X)))
        unseen = segments < 0
        if unseen.any():
            # A mixture component that got no customers in fit can still win for a new row:
            # send such rows to the nearest segment centre instead.
            distances = ((X[unseen, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
            segments[unseen] = distances.argmin(axis=1)
        return segments


def build_segmentation(clustering_cfg: Mapping, columns: Sequence[str],
                       params: Mapping | None = None) -> Pipeline:
    """The segmentation pipeline: select `columns` -> preprocessing -> SegmentAssigner.

    `params` are clusterer arguments (a trial's or the chosen ones). Built by the churn
    pipeline's own builder, so errors in `_target_`s read the same.
    """
    from gymchurn.pipeline import build_pipeline

    def resolved(node):
        # Interpolations such as ${seed} must be resolved before the node leaves its config.
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    model_cfg = {
        "preprocessing": resolved(clustering_cfg.get("preprocessing")) or [],
        "estimator": {
            "_target_": f"{SegmentAssigner.__module__}.{SegmentAssigner.__name__}",
            "clusterer": resolved(clustering_cfg["estimator"]),
        },
    }
    return build_pipeline({"steps": []}, model_cfg, columns, {"clusterer": dict(params or {})})


def scaled_inputs(pipeline: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """What the clusterer saw: the selected columns after preprocessing (standardised)."""
    return pipeline[:-1].transform(X)


# ---------------------------------------------------------------- scores, objectives, constraints


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


def constraint_values(labels, min_segments: int, max_segments: int,
                      min_segment_share: float) -> dict[str, float]:
    """Optuna constraint values of a segmentation: it is feasible when every value is <= 0."""
    segments, counts = segment_sizes(labels)
    return {
        "min_segments": float(min_segments - len(segments)),
        "max_segments": float(len(segments) - max_segments),
        "min_segment_share": float(min_segment_share - counts.min() / counts.sum()),
    }


def is_feasible(constraints: Mapping[str, float]) -> bool:
    return all(value <= 0 for value in constraints.values())


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
    silhouette_sample_size: int | None = None,
    seed: int = 0,
) -> Callable[[optuna.Trial], list[float]]:
    """Objective: fit one segmentation, return its objective scores, set its constraints.

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


# ---------------------------------------------------------------- the study


def study_name_for(prefix: str, clustering: str, objectives: Sequence[str], seed: int,
                   searched: Mapping, digest: str) -> str:
    """Same search (space, subsets, objectives, constraints) and same data -> same study."""
    fingerprint = hashlib.sha256(json.dumps(searched, sort_keys=True, default=str).encode())
    return (f"{prefix}-{clustering}-{'-'.join(objectives)}-seed{seed}"
            f"-{fingerprint.hexdigest()[:8]}-{digest[:8]}")


def make_sampler(tune_cfg: Mapping) -> optuna.samplers.BaseSampler:
    seed = int(tune_cfg["seed"])
    kind = tune_cfg.get("sampler", "tpe")
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=int(tune_cfg["n_startup_trials"]))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=int(tune_cfg["population_size"]))
    raise GymchurnError(f"unknown tune.sampler '{kind}'. Use tpe or nsga2.")


def open_pareto_study(tune_cfg: Mapping, study_name: str, directions: Sequence[str]) -> optuna.Study:
    """Create the multi-objective study in its storage, or load it (that is how runs resume)."""
    try:
        study = optuna.create_study(
            storage=open_storage(str(tune_cfg["storage"])), study_name=study_name,
            directions=list(directions), sampler=make_sampler(tune_cfg), load_if_exists=True,
        )
    except (ValueError, ImportError, SQLAlchemyError) as err:
        raise GymchurnError(
            f"could not open the Optuna storage '{tune_cfg['storage']}': {err}. "
            "Set tune.storage= to a SQLAlchemy URL such as sqlite:///path/optuna.db."
        ) from err
    found = [d.name.lower() for d in study.directions]
    if found != list(directions):
        raise GymchurnError(
            f"study '{study_name}' exists with directions {found}, but the objectives need "
            f"{list(directions)}. Set tune.study_name= to a new name."
        )
    return study


def trial_counts(study: optuna.Study) -> dict[str, int]:
    trials = finished_trials(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return {
        "n_trials_complete": len(complete),
        "n_trials_feasible": sum(is_feasible(t.constraints) for t in complete),
        "n_trials_failed": sum(t.state == TrialState.FAIL for t in trials),
    }


class ParetoTrialLogger(TrialRunLogger):
    """Nested MLflow run per trial of the multi-objective study: every score the trial
    computed, its constraint values and feasibility, instead of one `trial.value`."""

    def __init__(self, experiment_id: str, parent_run_id: str):
        super().__init__(experiment_id, parent_run_id, metric="")

    def trial_metrics(self, trial: optuna.trial.FrozenTrial) -> dict[str, float]:
        scores = {k: v for k, v in trial.user_attrs.items()
                  if k != "repeat_of" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        scores.update({f"constraint_{k}": v for k, v in trial.constraints.items()})
        return scores

    def trial_tags(self, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
        tags = {k: str(trial.user_attrs[k]) for k in ("error", "repeat_of")
                if trial.user_attrs.get(k) is not None}
        if trial.state == TrialState.COMPLETE:
            tags["feasible"] = str(is_feasible(trial.constraints)).lower()
        return tags


class ParetoProgressPrinter:
    """One line per trial: n of N, its objective values, feasibility, the Pareto front's size."""

    def __init__(self, n_total: int, objectives: Sequence[str],
                 printer: Callable[[str], None] = print):
        self.n_total = n_total
        self.objectives = list(objectives)
        self.printer = printer
        self.start = time.monotonic()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            values = "  ".join(f"{n}={v:.4f}" for n, v in zip(self.objectives, trial.values, strict=True))
            state = "feasible" if is_feasible(trial.constraints) else "infeasible"
        else:
            values, state = trial.state.name.lower(), ""
        counts = trial_counts(study)
        self.printer(
            f"  trial {len(finished_trials(study)):>3}/{self.n_total}  "
            f"{trial.params.get(COLUMN_SUBSET_PARAM, '?'):<18} {values}  {state:<10}  "
            f"front={len({tuple(sorted(t.params.items())) for t in study.best_trials})} "
            f"failed={counts['n_trials_failed']}  "
            f"{time.monotonic() - self.start:5.1f}s"
        )


# ---------------------------------------------------------------- choosing from the Pareto front


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


# ---------------------------------------------------------------- portraits and names


def standardised_differences(customers: pd.DataFrame, labels) -> pd.DataFrame:
    """Segments x columns: (segment mean - mean of everyone else) / column's overall std.

    How many standard deviations a segment sits from the rest on each column: the measure of
    what sets a segment apart, comparable across columns measured in different units.
    """
    labels = np.asarray(labels)
    std = customers.std(ddof=0).replace(0, np.nan)
    rows = {}
    for segment in np.unique(labels):
        inside = labels == segment
        rest = customers[~inside].mean() if (~inside).any() else customers.mean()
        rows[int(segment)] = ((customers[inside].mean() - rest) / std).fillna(0.0)
    return pd.DataFrame(rows).T.rename_axis("segment")


def phrase(column: str, difference: float, phrases: Mapping) -> str:
    """The words for one column's direction, e.g. Lifetime, +1.3 -> "long-standing"."""
    side = "high" if difference > 0 else "low"
    entry = phrases.get(column) or {}
    return entry.get(side) or f"{side} {column}"


def describing_columns(differences: pd.Series, min_effect: float,
                       correlation: pd.DataFrame | None = None,
                       max_correlation: float = 1.0) -> list[str]:
    """Columns that set a segment apart, strongest first: |difference| >= `min_effect`, and
    not nearly a copy of a column already chosen (|correlation| > `max_correlation`), so a
    name does not say "long contract, many months left" twice in other words."""
    chosen = []
    for column in differences.abs().sort_values(ascending=False, kind="stable").index:
        if abs(differences[column]) < min_effect:
            break
        if correlation is not None and any(
            abs(correlation.loc[column, c]) > max_correlation for c in chosen
        ):
            continue
        chosen.append(column)
    return chosen


def name_segments(differences: pd.DataFrame, phrases: Mapping, n_words: int = 2,
                  min_effect: float = 0.5, correlation: pd.DataFrame | None = None,
                  max_correlation: float = 1.0, lean_effect: float = 0.2) -> dict[int, str]:
    """A short descriptive name per segment, generated from what sets it apart.

    Each name joins the phrases of the segment's `n_words` strongest columns (|std. difference|
    >= `min_effect`). Names that collide get the next column's phrase, then the segment id.
    A segment strong on no column sits near the middle: "near average, leaning <phrase>" for
    its strongest column if that reaches `lean_effect`, else "typical customers".
    """
    described = {
        int(s): [phrase(c, row[c], phrases)
                 for c in describing_columns(row, min_effect, correlation, max_correlation)]
        for s, row in differences.iterrows()
    }
    fallback = {}
    for s, row in differences.iterrows():
        strongest = row.abs().idxmax()
        fallback[int(s)] = (f"near average, leaning {phrase(strongest, row[strongest], phrases)}"
                            if abs(row[strongest]) >= lean_effect else "typical customers")
    words = {s: max(1, n_words) for s in described}

    def current(s):
        return ", ".join(described[s][:words[s]]) or fallback[s]

    while True:
        names = {s: current(s) for s in described}
        clashes = {s for s in names if list(names.values()).count(names[s]) > 1}
        growable = [s for s in clashes if words[s] < len(described[s])]
        if not growable:
            break
        for s in growable:
            words[s] += 1
    return {s: (f"{n} (segment {s})" if s in clashes else n) for s, n in names.items()}


def portrait_table(customers: pd.DataFrame, labels, churn, names: Mapping[int, str],
                   differences: pd.DataFrame, top_features: int = 3) -> pd.DataFrame:
    """One row per segment: size, share, churn rate, what sets it apart, every column's mean.

    Describes every customer column, not only the clustered ones.
    """
    labels = np.asarray(labels)
    churn = pd.Series(np.asarray(churn, dtype=float), index=customers.index)
    rows = []
    for segment in sorted(np.unique(labels)):
        inside = labels == segment
        diff = differences.loc[int(segment)]
        top = diff.abs().sort_values(ascending=False, kind="stable").index[:top_features]
        rows.append({
            "segment": int(segment), "name": names[int(segment)], "size": int(inside.sum()),
            "share": float(inside.mean()), "churn_rate": float(churn[inside].mean()),
            "sets_apart": ", ".join(f"{c} {diff[c]:+.2f}" for c in top),
            **{c: float(customers.loc[inside, c].mean()) for c in customers.columns},
        })
    return pd.DataFrame(rows)


def portraits_markdown(portraits: pd.DataFrame) -> str:
    """The portrait table as Markdown, sorted by churn rate (for the run and the study)."""
    table = portraits.sort_values("churn_rate")
    fixed = ["segment", "name", "size", "share", "churn_rate", "sets_apart"]
    means = [c for c in table.columns if c not in fixed]
    header = ["segment", "name", "size", "share", "churn", "sets it apart (std. diff.)", *means]

    def cell(column, value):
        if column in ("share", "churn_rate"):
            return f"{100 * value:.1f} %"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in fixed + means) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


def _segment_colours(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]


def segment_map_figure(X_scaled, labels, names: Mapping[int, str], seed: int = 0) -> plt.Figure:
    """Customers on the first two principal components of the clustered columns."""
    X_scaled = np.asarray(X_scaled, dtype=float)
    labels = np.asarray(labels)
    pca = PCA(n_components=2, random_state=seed).fit(X_scaled)
    points = pca.transform(X_scaled)
    # Many customers share exactly the same values (contract lengths, binary columns):
    # a little jitter shows how many sit on each spot.
    points = points + np.random.default_rng(seed).normal(0, 0.04, points.shape)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    segments = sorted(np.unique(labels))
    for colour, s in zip(_segment_colours(len(segments)), segments, strict=True):
        inside = labels == s
        ax.scatter(points[inside, 0], points[inside, 1], s=6, alpha=0.35, color=colour,
                   label=f"{s}: {names[int(s)]} ({inside.mean():.0%})")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    ax.set_title("Segments on a 2-D map (PCA of the clustered columns, jittered)")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    return fig


def silhouette_figure(X_scaled, labels, names: Mapping[int, str]) -> plt.Figure:
    """Each customer's silhouette, grouped by segment, with the mean as a dashed line."""
    labels = np.asarray(labels)
    values = silhouette_samples(np.asarray(X_scaled, dtype=float), labels)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    bottom = 0
    segments = sorted(np.unique(labels))
    for colour, s in zip(_segment_colours(len(segments)), segments, strict=True):
        own = np.sort(values[labels == s])
        ax.fill_betweenx(np.arange(bottom, bottom + len(own)), 0, own, color=colour, alpha=0.8)
        ax.text(-0.02, bottom + len(own) / 2, f"{s}: {names[int(s)]}", ha="right", va="center",
                fontsize=7)
        bottom += len(own) + 20
    ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1,
               label=f"mean {values.mean():.3f}")
    ax.set_xlim(min(-0.1, values.min() - 0.05), 1)
    ax.set_yticks([])
    ax.set_xlabel("silhouette")
    ax.set_title("Silhouette of every customer, by segment")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def profile_heatmap(differences: pd.DataFrame, portraits: pd.DataFrame,
                    clustered: Sequence[str]) -> plt.Figure:
    """Segments x columns, coloured by standardised difference, annotated with the means.

    Clustered columns are marked with *; the others show how the segments differ on what the
    clustering never saw.
    """
    order = portraits.sort_values("churn_rate")["segment"].tolist()
    columns = list(differences.columns)
    data = differences.loc[order, columns].to_numpy(dtype=float)
    means = portraits.set_index("segment").loc[order, columns].to_numpy(dtype=float)
    limit = max(1.0, float(np.nanmax(np.abs(data))))
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.6 * len(order) + 2.5))
    image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(order)):
        for j in range(len(columns)):
            ax.text(j, i, f"{means[i, j]:.3g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)),
                  [f"{c}{' *' if c in clustered else ''}" for c in columns],
                  rotation=40, ha="right", fontsize=8)
    rows = portraits.set_index("segment").loc[order]
    ax.set_yticks(range(len(order)), [f"{s}: {rows.loc[s, 'name']} (churn "
                                      f"{rows.loc[s, 'churn_rate']:.0%})" for s in order],
                  fontsize=8)
    fig.colorbar(image, ax=ax, label="std. difference from the other customers")
    ax.set_title("Feature profile per segment (cell text: segment mean; * = clustered column)")
    fig.tight_layout()
    return fig


def dendrogram_figure(X_scaled, linkage: str, n_segments: int) -> plt.Figure:
    """The merge tree of agglomerative clustering (same linkage, same inputs), cut at
    `n_segments`; the top merges only, as a full tree of thousands of leaves is unreadable."""
    from scipy.cluster.hierarchy import dendrogram
    from scipy.cluster.hierarchy import linkage as build_linkage

    tree = build_linkage(np.asarray(X_scaled, dtype=float), method=linkage)
    cut = tree[-(n_segments - 1), 2] if n_segments > 1 else tree[-1, 2]
    fig, ax = plt.subplots(figsize=(9, 5))
    dendrogram(tree, truncate_mode="lastp", p=max(30, 3 * n_segments), ax=ax,
               color_threshold=cut, show_leaf_counts=True, leaf_font_size=7)
    ax.axhline(cut, color="grey", linestyle="--", linewidth=1,
               label=f"cut: {n_segments} segments")
    ax.set_ylabel(f"merge distance ({linkage} linkage)")
    ax.set_xlabel("customers (leaf labels: group sizes)")
    ax.set_title("Dendrogram (agglomerative clustering)")
    ax.legend()
    fig.tight_layout()
    return fig


def pareto_figure(study: optuna.Study, objectives: Sequence[str], chosen: int) -> plt.Figure:
    """Every complete trial on the first two objectives: feasible ones coloured by column
    subset, infeasible ones as grey crosses, the Pareto front joined, the chosen one starred."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    x_name, y_name = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    infeasible = [t for t in complete if not is_feasible(t.constraints)]
    if infeasible:
        ax.scatter([t.user_attrs[x_name] for t in infeasible],
                   [t.user_attrs[y_name] for t in infeasible],
                   marker="x", color="lightgrey", label="infeasible (constraints)")
    feasible = [t for t in complete if is_feasible(t.constraints)]
    subsets = sorted({t.params.get(COLUMN_SUBSET_PARAM, "?") for t in feasible})
    for colour, subset in zip(_segment_colours(len(subsets)), subsets, strict=True):
        own = [t for t in feasible if t.params.get(COLUMN_SUBSET_PARAM, "?") == subset]
        ax.scatter([t.user_attrs[x_name] for t in own], [t.user_attrs[y_name] for t in own],
                   s=18, color=colour, alpha=0.8, label=subset)
    front = sorted(study.best_trials, key=lambda t: t.user_attrs[x_name])
    if front:
        ax.plot([t.user_attrs[x_name] for t in front], [t.user_attrs[y_name] for t in front],
                color="black", linewidth=1, label="Pareto front")
    best = [t for t in complete if t.number == chosen]
    if best:
        ax.scatter([best[0].user_attrs[x_name]], [best[0].user_attrs[y_name]], marker="*",
                   s=250, color="gold", edgecolor="black", zorder=5, label=f"chosen (trial {chosen})")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("Trials and Pareto front")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def segmentation_figures(X_scaled, labels, names, differences, portraits, clustered,
                         linkage: str | None, seed: int) -> dict[str, plt.Figure]:
    """The run's portrait plots; the dendrogram only for agglomerative clustering."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout on long tick labels
        figures = {
            "segment_map": segment_map_figure(X_scaled, labels, names, seed),
            "silhouette": silhouette_figure(X_scaled, labels, names),
            "feature_profile": profile_heatmap(differences, portraits, clustered),
        }
        if linkage:
            figures["dendrogram"] = dendrogram_figure(X_scaled, linkage,
                                                      len(np.unique(labels)))
    return figures
