"""The segments road's core: Optuna (column subset x clusterer arguments; several objectives,
under constraints) -> Pareto front -> selection rule + bootstrap stability -> refit ->
scores, rules, portraits, names, measures, figures -> a plain `SegmentationResult`.

A segment is a rule over the raw columns (a leaf of a shallow tree fitted to the clusters,
segments.model.RuleSegments), so the department can filter its members in a CRM.

No MLflow here: `plan` says what the run is, `fit` returns what to log, and the tracking
stage's recorder logs both (`result.record()`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gymchurn.data import feature_columns, table_digest
from gymchurn.errors import GymchurnError, interruption_point
from gymchurn.monitoring.reference import segment_reference
from gymchurn.segments import COLUMN_SUBSET_PARAM
from gymchurn.segments.model import NAME_COLUMN, SEGMENT_COLUMN, build_segmentation, scaled_inputs
from gymchurn.segments.objectives import (
    OBJECTIVES,
    check_objectives,
    make_objective,
    segment_scores,
)
from gymchurn.segments.selection import SELECTION_RULES
from gymchurn.serving import data_schema, schema_typed
from gymchurn.tracking import DatasetInput, ModelSpec, Registration, RunRecord
from gymchurn.tuning import (
    ProgressPrinter,
    last_failure,
    open_study,
    run_trials,
    study_name,
    timeout_note,
    trial_counts,
)

SERVED_MODEL = Path(__file__).with_name("served.py")  # logged as the model's code
# Logged as version tags under these keys for every algorithm.
SCORE_KEYS = ["silhouette", "n_segments", "davies_bouldin", "calinski_harabasz",
              "min_segment_share", "churn_rate_best_segment", "churn_rate_worst_segment",
              "churn_range", "stability_ari_mean", "stability_ari_std", "rule_fidelity_min",
              "distinct_columns_min", "max_conditions", "correlated_input_pairs"]


def column_subsets(cfg: DictConfig) -> dict[str, list[str]]:
    """The named subsets Optuna chooses between, checked against the schema."""
    columns, target = feature_columns(cfg.data), cfg.data.target
    defined = {name: list(cols) for name, cols in cfg.segmentation.column_subsets.items()}
    names = list(cfg.segmentation.search) if cfg.segmentation.search else list(defined)
    unknown = [n for n in names if n not in defined]
    if unknown or not names:
        raise GymchurnError(f"segmentation.search names unknown column subsets {unknown}. "
                            f"Choose from {sorted(defined)} (segmentation.column_subsets).")
    for name in names:
        cols = defined[name]
        if target in cols:
            raise GymchurnError(f"column subset '{name}' includes the target '{target}'. Churn "
                                "only describes segments; remove it from the subset.")
        bad = [c for c in cols if c not in columns]
        if bad or len(cols) < 2 or len(set(cols)) != len(cols):
            raise GymchurnError(f"column subset '{name}' must list at least 2 distinct customer "
                                f"columns; unknown: {bad}. Columns: {columns}.")
    return {n: defined[n] for n in names}


def near_duplicate_subsets(customers: pd.DataFrame, subsets: dict[str, list[str]],
                           max_r: float) -> dict[str, list[tuple[str, str, float]]]:
    """The guard: subsets holding a pair of columns with |r| above `max_r` (near duplicates,
    the same information weighed twice) -> those pairs."""
    from gymchurn.segments.rules import correlated_pairs

    found = {name: correlated_pairs(customers, cols, max_r) for name, cols in subsets.items()}
    return {name: pairs for name, pairs in found.items() if pairs}


def check_config(cfg: DictConfig) -> None:
    """Values the schema cannot check: fail before any work with the fix in the message."""
    if int(cfg.tune.n_trials) < 1:
        raise GymchurnError(f"tune.n_trials must be at least 1, got {cfg.tune.n_trials}.")
    if int(cfg.tune.bootstraps) < 2:
        raise GymchurnError(f"tune.bootstraps must be at least 2, got {cfg.tune.bootstraps}.")
    if cfg.tune.sampler not in ("tpe", "nsga2"):
        raise GymchurnError(f"unknown tune.sampler '{cfg.tune.sampler}'. Use tpe or nsga2.")
    objectives = check_objectives(cfg.segmentation.objectives)
    c = cfg.segmentation.constraints
    if not 2 <= int(c.min_segments) <= int(c.max_segments):
        raise GymchurnError("segmentation.constraints need 2 <= min_segments <= max_segments, "
                            f"got {c.min_segments} and {c.max_segments}.")
    if not 0 <= float(c.min_segment_share) <= 1 / int(c.min_segments):
        raise GymchurnError("segmentation.constraints.min_segment_share must be between 0 and "
                            f"1/min_segments, got {c.min_segment_share}.")
    s = cfg.segmentation.selection
    if s.rule not in SELECTION_RULES:
        raise GymchurnError(f"unknown segmentation.selection.rule '{s.rule}'. Use one of "
                            f"{list(SELECTION_RULES)}.")
    # On objectives only, so that choosing from the Pareto front is consistent (see rank_front).
    for what, names in (("require", list(s.require or {})), ("prefer", [s.prefer])):
        if any(n not in objectives for n in names):
            raise GymchurnError(f"segmentation.selection.{what} must name objectives "
                                f"{objectives}, got {names}.")
    if s.rule == "knee" and len(objectives) < 2:
        raise GymchurnError("selection.rule=knee needs at least two objectives.")
    if int(s.stability_candidates) < 1:
        raise GymchurnError("segmentation.selection.stability_candidates must be at least 1.")
    unknown = [c for c in cfg.segmentation.log_columns if c not in feature_columns(cfg.data)]
    if unknown:
        raise GymchurnError(f"segmentation.log_columns names unknown columns {unknown}; use "
                            f"customer columns {feature_columns(cfg.data)} or [].")
    column_subsets(cfg)


def open_segment_study(tune_cfg, name: str, objectives):
    """The multi-objective study: seeded TPE (good with few trials) or NSGA-II."""
    import optuna

    def sampler(seed: int):
        if tune_cfg.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=int(tune_cfg.population_size))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(tune_cfg.n_startup_trials))

    return open_study(tune_cfg.storage, name, [OBJECTIVES[o] for o in objectives], sampler,
                      int(tune_cfg.seed))


# ---------------------------------------------------------------- the plan: what the run is


@dataclass
class SegmentationPlan:
    cfg: DictConfig
    customers: pd.DataFrame
    provenance: dict
    digest: str
    subsets: dict          # the searched ones
    refused: dict          # subset -> its near-duplicate pairs (not searched)
    groups: dict           # column -> its group of near duplicates (distinctness)
    objectives: list
    study_name: str

    @property
    def X(self) -> pd.DataFrame:
        return self.customers[feature_columns(self.cfg.data)]

    @property
    def churn(self) -> pd.Series:
        return self.customers[self.cfg.data.target]

    @property
    def tags(self) -> dict[str, str]:
        return {"run_type": "segmentation", "clustering": self.cfg.clustering.name,
                "data_digest": self.digest, "data_file_sha256": self.provenance["sha256"],
                "study_name": self.study_name, "objectives": ",".join(self.objectives)}

    def record(self) -> RunRecord:
        cfg = self.cfg
        constraints = OmegaConf.to_container(cfg.segmentation.constraints)
        return RunRecord(
            params={"clustering": cfg.clustering.name, "objectives": ",".join(self.objectives),
                    "n_trials": int(cfg.tune.n_trials), "sampler": cfg.tune.sampler,
                    "bootstraps": cfg.tune.bootstraps, "searched_subsets": ",".join(self.subsets),
                    "refused_subsets": ",".join(self.refused) or "none",
                    "rule_max_depth": cfg.segmentation.rules.max_depth,
                    "selection_rule": cfg.segmentation.selection.rule,
                    **{f"constraint_{k}": v for k, v in constraints.items()},
                    "n_rows": len(self.customers)},
            texts={"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)},
            datasets=[DatasetInput(self.customers, cfg.data.name, self.provenance["path"],
                                   self.digest, cfg.data.target, "training")],
        )


def plan(cfg: DictConfig, customers: pd.DataFrame, provenance: dict) -> SegmentationPlan:
    from gymchurn.segments.rules import column_groups

    check_config(cfg)
    digest = table_digest(customers)
    X = customers[feature_columns(cfg.data)]
    max_r = float(cfg.segmentation.near_duplicate_r)
    subsets = column_subsets(cfg)
    refused = near_duplicate_subsets(X, subsets, max_r)
    if len(refused) == len(subsets):
        shown = "; ".join(f"{n}: {a} ~ {b} (r = {r:.2f})" for n, pairs in refused.items()
                          for a, b, r in pairs[:1])
        raise GymchurnError(f"every searched column subset holds near-duplicate columns (|r| > "
                            f"{max_r}): {shown}. Drop one column of each pair from "
                            "segmentation.column_subsets, or search other subsets.")
    subsets = {n: cols for n, cols in subsets.items() if n not in refused}
    objectives = list(cfg.segmentation.objectives)
    searched = {"subsets": subsets,
                "rules": OmegaConf.to_container(cfg.segmentation.rules),
                "log_columns": list(cfg.segmentation.log_columns),
                "distinct": [max_r, float(cfg.segmentation.distinct_min_effect)],
                "space": OmegaConf.to_container(cfg.clustering.search_space, resolve=True),
                "constraints": OmegaConf.to_container(cfg.segmentation.constraints),
                "estimator": OmegaConf.to_container(cfg.clustering.estimator, resolve=True),
                "silhouette_sample_size": cfg.tune.silhouette_sample_size}
    name = study_name(["segment", cfg.clustering.name, "-".join(objectives), f"seed{cfg.tune.seed}"],
                      digest, searched, given=cfg.tune.study_name)
    return SegmentationPlan(cfg, customers, provenance, digest, subsets, refused,
                            column_groups(X, max_r), objectives, name)


def builder(cfg: DictConfig):
    """(columns, clusterer params) -> an unfitted segmentation pipeline of this config."""
    return lambda columns, params: build_segmentation(cfg.clustering, columns, params,
                                                      cfg.segmentation.rules)


# ---------------------------------------------------------------- the result


@dataclass
class SegmentationResult:
    plan: SegmentationPlan
    pipeline: Any
    labels: Any
    column_subset: str
    best_params: dict
    chosen_trial: int
    metrics: dict
    names: dict
    rules: pd.DataFrame      # per segment: rule in words, filter expression, columns
    portraits: pd.DataFrame
    pareto_front: pd.DataFrame
    selection: pd.DataFrame
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)
    tuning_seconds: float = 0.0
    timeout_note: str | None = None  # set when tune.timeout cut the study short

    @property
    def clustered_columns(self) -> list[str]:
        return self.plan.subsets[self.column_subset]

    def segment_tags(self) -> dict[str, str]:
        """segment_<id>_name, _rule (words) and _filter (the expression a CRM filter types)."""
        tags = {}
        for r in self.rules.itertuples():
            tags.update({f"segment_{r.segment}_name": self.names[r.segment],
                         f"segment_{r.segment}_rule": r.rule,
                         f"segment_{r.segment}_filter": r.filter})
        return tags

    def model(self) -> ModelSpec:
        """The registered model: the pipeline, returning segment id and name per customer."""
        # The input example: the schema's types, as the training file writes them (5.0 months).
        example = schema_typed(self.plan.X.head(5), self.plan.cfg.data,
                               self.plan.provenance.get("stored_kinds"))
        predicted = self.pipeline.predict(example).astype("int64")
        output = pd.DataFrame({SEGMENT_COLUMN: predicted,
                               NAME_COLUMN: [self.names[s] for s in predicted]}, index=example.index)
        return ModelSpec(self.pipeline, SERVED_MODEL, example, output, {
            "segment_names": {str(s): n for s, n in self.names.items()},
            "segment_rules": {str(r.segment): r.filter for r in self.rules.itertuples()},
            "feature_columns": list(example.columns), "clustered_columns": self.clustered_columns,
            "data_schema": data_schema(self.plan.cfg.data),
            # each segment's share (and churn) of the fitted customers: monitoring's segment mix
            "reference": segment_reference(np.asarray(self.labels), self.plan.churn.to_numpy())})

    def record(self, registry_cfg=None, total_seconds: float | None = None) -> RunRecord:
        registration = None
        if registry_cfg is not None and registry_cfg.register:
            registration = Registration(registry_cfg.model_name, {
                "clustering": self.plan.cfg.clustering.name, COLUMN_SUBSET_PARAM: self.column_subset,
                "clustered_columns": ",".join(self.clustered_columns),
                "data_digest": self.plan.digest, **self.segment_tags(),
                **{k: f"{self.metrics[k]:.6f}" for k in SCORE_KEYS},
            }, registry_cfg.alias)
        timings = {"tuning_seconds": self.tuning_seconds}
        cut = {"tuning_cut_short": self.timeout_note} if self.timeout_note else {}
        if total_seconds is not None:
            timings["total_seconds"] = total_seconds
        return RunRecord(
            # The chosen trial's parameters under the trial runs' own names (compare view).
            params={COLUMN_SUBSET_PARAM: self.column_subset, **self.best_params,
                    "clustered_columns": ",".join(self.clustered_columns)},
            metrics={**self.metrics, **timings},
            tags={**self.segment_tags(), **cut},
            figures={f"plots/{name}.png": fig for name, fig in self.figures.items()},
            tables=self.tables, texts=self.texts, model=self.model(), registration=registration,
        )


def tune(p: SegmentationPlan, callbacks=(), printer=print, study=None):
    """Run the study to tune.n_trials finished trials (`study`: the plan's, if already open);
    return it and the seconds it took."""
    cfg = p.cfg
    study = study or open_segment_study(cfg.tune, p.study_name, p.objectives)
    objective = make_objective(p.X, p.churn, p.subsets,
                               OmegaConf.to_container(cfg.clustering.search_space, resolve=True),
                               builder(cfg), p.objectives,
                               OmegaConf.to_container(cfg.segmentation.constraints), p.groups,
                               float(cfg.segmentation.distinct_min_effect),
                               cfg.tune.silhouette_sample_size, int(cfg.seed))
    start = time.monotonic()
    progress = ProgressPrinter(int(cfg.tune.n_trials), p.objectives, COLUMN_SUBSET_PARAM, printer)
    run_trials(study, objective, int(cfg.tune.n_trials), cfg.tune.timeout, [*callbacks, progress])
    return study, time.monotonic() - start


def choose(p: SegmentationPlan, study):
    """Pareto front -> ranked by the selection rule -> first candidate stable enough."""
    from gymchurn.segments.selection import bootstrap_stability, choose_solution, pareto_front, rank_front

    front = pareto_front(study, p.objectives)
    if front.empty:
        counts = trial_counts(study)
        raise GymchurnError(
            f"no trial of study '{study.study_name}' satisfies the constraints "
            f"({counts['n_trials_complete']} complete, {counts['n_trials_failed']} failed)."
            f"{last_failure(study)} Run more trials (tune.n_trials=...), loosen "
            "segmentation.constraints, or check the clustering config."
        )
    s = p.cfg.segmentation.selection
    require = OmegaConf.to_container(s.require) if s.require else {}
    ranked = rank_front(front, s.rule, p.objectives, require, s.prefer)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    build = builder(p.cfg)

    def refit_builder(number):
        params = {k: v for k, v in trials[number].params.items() if k != COLUMN_SUBSET_PARAM}
        columns = p.subsets[trials[number].params[COLUMN_SUBSET_PARAM]]
        return lambda: build(columns, params)

    def stability(number):
        interruption_point()
        model = refit_builder(number)().fit(p.X)
        return bootstrap_stability(refit_builder(number), p.X, model[-1].labels_,
                                   int(p.cfg.tune.bootstraps), int(p.cfg.seed))

    chosen, checked = choose_solution(ranked, stability, float(s.min_stability),
                                      int(s.stability_candidates))
    return trials[chosen], front, ranked, checked


def fit(p: SegmentationPlan, callbacks=(), printer=print, study=None) -> SegmentationResult:
    """Tune, choose, refit, score and describe the segments; return the result."""
    from threadpoolctl import threadpool_limits

    from gymchurn.segments import figures as segment_figures
    from gymchurn.segments.describe import describe, rules_given_up
    from gymchurn.segments.objectives import findability_scores
    from gymchurn.segments.portraits import portraits_markdown, standardised_differences
    from gymchurn.segments.rules import correlated_pairs
    from gymchurn.segments.selection import best_per_subset

    cfg = p.cfg
    with threadpool_limits(limits=int(cfg.n_jobs)):
        study, tuning_seconds = tune(p, callbacks, printer, study)
        best, front, ranked, checked = choose(p, study)
        subset = best.params[COLUMN_SUBSET_PARAM]
        params = {k: v for k, v in best.params.items() if k != COLUMN_SUBSET_PARAM}
        X, churn = p.X, p.churn
        interruption_point()
        pipeline = builder(cfg)(p.subsets[subset], params).fit(X)
        labels, clusters = pipeline[-1].labels_, pipeline[-1].clusters_
        X_scaled = scaled_inputs(pipeline, X)
        chosen_row = checked[checked["chosen"]].iloc[0]
        differences = standardised_differences(X, labels)
        rules, names, portraits = describe(p, pipeline, labels, differences)
        metrics = segment_scores(X_scaled, labels, churn)
        metrics.update(findability_scores(X, labels, clusters, p.groups,
                                          float(cfg.segmentation.distinct_min_effect)))
        metrics.update(rules_given_up(X_scaled, labels, clusters))
        metrics.update(max_conditions=float(rules["conditions"].max()),
                       correlated_input_pairs=float(len(correlated_pairs(
                           X, p.subsets[subset], float(cfg.segmentation.near_duplicate_r)))),
                       stability_ari_mean=chosen_row["stability_ari_mean"],
                       stability_ari_std=chosen_row["stability_ari_std"],
                       chosen_trial_number=best.number, pareto_front_size=len(front),
                       **trial_counts(study))

        clusterer = pipeline[-1].clustering_[-1].clusterer_
        figures = segment_figures.segmentation_figures(
            X_scaled, labels, names, differences, portraits, p.subsets[subset],
            getattr(clusterer, "linkage", None), int(cfg.seed))
        figures["pareto_front"] = segment_figures.pareto_figure(study, p.objectives, best.number)
        selection = checked.drop(columns="_aris")
        tables = {
            "portraits.json": portraits, "portraits.csv": portraits, "rules.csv": rules,
            "pareto_front.csv": ranked, "selection.csv": selection,
            "subset_scores.csv": best_per_subset(study), "trials.csv": study.trials_dataframe(),
            "segments.csv": pd.DataFrame({"segment": labels, "cluster": clusters,
                                          "churn": churn.to_numpy()},
                                         index=X.index).rename_axis("row").reset_index(),
        }
        note = timeout_note(study, int(cfg.tune.n_trials), cfg.tune.timeout)
        texts = {"portraits.md": portraits_markdown(portraits, dict(cfg.data.get("labels") or {}))}
    return SegmentationResult(p, pipeline, labels, subset, params, best.number, metrics, names,
                              rules, portraits, ranked, selection, figures, tables, texts,
                              tuning_seconds, note)
