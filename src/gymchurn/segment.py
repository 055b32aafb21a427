"""Segmentation experiment entrypoint: `make segment clustering=kmeans` / `python -m gymchurn.segment`.

load + validate -> Optuna (column subset x clusterer arguments; silhouette and churn spread,
under constraints) -> Pareto front -> selection rule + bootstrap stability -> refit ->
portraits, names, scores, plots -> MLflow run (nested trial runs) -> registry version of
`gym-churn-segmentation` with alias `challenger`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from gymchurn import segment_model
from gymchurn.config import CONFIG_DIR, register_resolvers
from gymchurn.data import feature_columns, load_customers, table_digest
from gymchurn.errors import GymchurnError, exit_on_interrupt, exit_on_user_error
from gymchurn.registry import log_pipeline_model, register_version
from gymchurn.segmentation import (
    COLUMN_SUBSET_PARAM,
    OBJECTIVES,
    SELECTION_RULES,
    ParetoProgressPrinter,
    ParetoTrialLogger,
    best_per_subset,
    bootstrap_stability,
    build_segmentation,
    check_objectives,
    choose_solution,
    make_objective,
    name_segments,
    open_pareto_study,
    pareto_figure,
    pareto_front,
    portrait_table,
    portraits_markdown,
    rank_front,
    scaled_inputs,
    segment_scores,
    segmentation_figures,
    standardised_differences,
    study_name_for,
    trial_counts,
)
from gymchurn.tracking import (
    git_commit,
    log_table_input,
    quiet_libraries,
    setup_experiment,
    summary_footer,
)
from gymchurn.tuning import finished_trials, run_trials

# Logged under these keys for every algorithm.
SCORE_KEYS = ["silhouette", "n_segments", "davies_bouldin", "calinski_harabasz",
              "min_segment_share", "churn_rate_best_segment", "churn_rate_worst_segment",
              "churn_range", "stability_ari_mean", "stability_ari_std"]


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


def check_config(cfg: DictConfig) -> None:
    """Values Hydra cannot check for us: fail before any work with the fix in the message."""
    if int(cfg.tune.n_trials) < 1:
        raise GymchurnError(f"tune.n_trials must be at least 1, got {cfg.tune.n_trials}.")
    if int(cfg.tune.bootstraps) < 2:
        raise GymchurnError(f"tune.bootstraps must be at least 2, got {cfg.tune.bootstraps}.")
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
    column_subsets(cfg)


def run_segmentation(cfg: DictConfig) -> dict:
    """Run one segmentation experiment; return its run id, scores, portraits and model version."""
    with threadpool_limits(limits=int(cfg.n_jobs)):
        return _run_segmentation(cfg)


def _run_segmentation(cfg: DictConfig) -> dict:
    started = time.monotonic()
    quiet_libraries()
    check_config(cfg)
    df, provenance = load_customers(cfg.data)
    digest = table_digest(df)
    target = cfg.data.target
    X, churn = df[feature_columns(cfg.data)], df[target]
    subsets = column_subsets(cfg)
    objectives = list(cfg.segmentation.objectives)
    constraints = OmegaConf.to_container(cfg.segmentation.constraints)
    space = OmegaConf.to_container(cfg.clustering.search_space, resolve=True)
    algorithm = cfg.clustering.name
    searched = {"subsets": subsets, "space": space, "constraints": constraints,
                "estimator": OmegaConf.to_container(cfg.clustering.estimator, resolve=True),
                "silhouette_sample_size": cfg.tune.silhouette_sample_size}
    study_name = cfg.tune.study_name or study_name_for(
        "segment", algorithm, objectives, int(cfg.tune.seed), searched, digest)
    study = open_pareto_study(cfg.tune, study_name, [OBJECTIVES[o] for o in objectives])
    n_total = int(cfg.tune.n_trials)
    already = len(finished_trials(study))
    experiment_id = setup_experiment(cfg.tracking)

    def build(columns, params):
        return build_segmentation(cfg.clustering, columns, params)

    tags = {"run_type": "segmentation", "clustering": algorithm, "data_digest": digest,
            "data_file_sha256": provenance["sha256"], "study_name": study_name,
            "objectives": ",".join(objectives), "git_commit": git_commit()}
    print(f"segmentation experiment: {algorithm} on {len(df)} customers, choosing among "
          f"{len(subsets)} column subsets; objectives {', '.join(objectives)}", flush=True)
    if already:
        print(f"resuming study '{study_name}': {already} of {n_total} trials already finished",
              flush=True)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"segment-{algorithm}",
                          tags=tags) as run:
        try:
            mlflow.log_params({
                "clustering": algorithm, "objectives": ",".join(objectives), "n_trials": n_total,
                "sampler": cfg.tune.sampler, "bootstraps": cfg.tune.bootstraps,
                "searched_subsets": ",".join(subsets), "selection_rule": cfg.segmentation.selection.rule,
                **{f"constraint_{k}": v for k, v in constraints.items()}, "n_rows": len(df),
            })
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            log_table_input(df, cfg.data.name, provenance["path"], digest, target, "segmentation")

            objective = make_objective(X, churn, subsets, space, build, objectives, constraints,
                                       cfg.tune.silhouette_sample_size, int(cfg.seed))
            callbacks = [ParetoProgressPrinter(n_total, objectives, lambda s: print(s, flush=True))]
            if cfg.tracking.log_trials:
                callbacks.insert(0, ParetoTrialLogger(experiment_id, run.info.run_id))
            tune_start = time.monotonic()
            run_trials(study, objective, n_total, cfg.tune.timeout, callbacks)
            tuning_seconds = time.monotonic() - tune_start
            result = finish_run(cfg, study, objectives, subsets, build, X, churn, tags)
            result.update(run_id=run.info.run_id, experiment_id=experiment_id,
                          study_name=study_name, resumed_trials=already)
            mlflow.log_metrics({"tuning_seconds": tuning_seconds,
                                "total_seconds": time.monotonic() - started})
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: the run says it was killed; the study keeps its trials.
            mlflow.end_run("KILLED")
            print(f"\ninterrupted: MLflow run {run.info.run_id} marked KILLED; study "
                  f"'{study_name}' keeps {len(finished_trials(study))} finished trials. "
                  "Rerun the same command to resume.", flush=True)
            raise
    print_summary(result, cfg)
    return result


def choose_from_front(cfg, study, objectives, subsets, build, X):
    """Pareto front -> ranked by the selection rule -> first candidate stable enough."""
    front = pareto_front(study, objectives)
    if front.empty:
        counts = trial_counts(study)
        failed = [t for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]
        reason = f" Last failure: {failed[-1].user_attrs['error']}." if failed else ""
        raise GymchurnError(
            f"no trial of study '{study.study_name}' satisfies the constraints "
            f"({counts['n_trials_complete']} complete, {counts['n_trials_failed']} failed).{reason} "
            "Run more trials (tune.n_trials=...), loosen segmentation.constraints, or check "
            "the clustering config."
        )
    s = cfg.segmentation.selection
    require = OmegaConf.to_container(s.require) if s.require else {}
    ranked = rank_front(front, s.rule, objectives, require, s.prefer)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}

    def refit_builder(number):
        params = {k: v for k, v in trials[number].params.items() if k != COLUMN_SUBSET_PARAM}
        return lambda: build(subsets[trials[number].params[COLUMN_SUBSET_PARAM]], params)

    def stability(number):
        model = refit_builder(number)().fit(X)
        return bootstrap_stability(refit_builder(number), X, model[-1].labels_,
                                   int(cfg.tune.bootstraps), int(cfg.seed))

    chosen, checked = choose_solution(ranked, stability, float(s.min_stability),
                                      int(s.stability_candidates))
    return trials[chosen], front, ranked, checked


def finish_run(cfg, study, objectives, subsets, build, X, churn, tags) -> dict:
    """After tuning: choose, refit, score, describe, plot, log the model, register it."""
    best, front, ranked, checked = choose_from_front(cfg, study, objectives, subsets, build, X)
    subset = best.params[COLUMN_SUBSET_PARAM]
    params = {k: v for k, v in best.params.items() if k != COLUMN_SUBSET_PARAM}
    pipeline = build(subsets[subset], params).fit(X)
    labels = pipeline[-1].labels_
    X_scaled = scaled_inputs(pipeline, X)
    chosen_row = checked[checked["chosen"]].iloc[0]
    metrics = segment_scores(X_scaled, labels, churn)
    metrics.update(stability_ari_mean=chosen_row["stability_ari_mean"],
                   stability_ari_std=chosen_row["stability_ari_std"],
                   chosen_trial_number=best.number, pareto_front_size=len(front),
                   **trial_counts(study))

    p = cfg.portraits
    differences = standardised_differences(X, labels)
    names = name_segments(differences, p.phrases, int(p.name_words), float(p.min_effect),
                          X.corr(), float(p.max_correlation), float(p.lean_effect))
    portraits = portrait_table(X, labels, churn, names, differences, int(p.top_features))

    # The clustered columns become a param when the model's config is logged, below.
    mlflow.log_params({COLUMN_SUBSET_PARAM: subset, **{f"best_{k}": v for k, v in params.items()}})
    mlflow.log_metrics(metrics)
    mlflow.set_tags({f"segment_{s}": n for s, n in names.items()})
    clusterer = pipeline[-1].clusterer_
    figures = segmentation_figures(X_scaled, labels, names, differences, portraits,
                                   subsets[subset], getattr(clusterer, "linkage", None),
                                   int(cfg.seed))
    figures["pareto_front"] = pareto_figure(study, objectives, best.number)
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}.png")
    mlflow.log_table(portraits, "portraits.json")
    mlflow.log_text(portraits_markdown(portraits), "portraits.md")
    with tempfile.TemporaryDirectory() as tmp:
        tables = {
            "portraits.csv": portraits,
            "pareto_front.csv": ranked,
            "selection.csv": checked.drop(columns="_aris"),
            "subset_scores.csv": best_per_subset(study),
            "trials.csv": study.trials_dataframe(),
            "segments.csv": pd.DataFrame({"segment": labels, "churn": churn.to_numpy()},
                                         index=X.index),
        }
        for file_name, table in tables.items():
            path = Path(tmp) / file_name
            table.to_csv(path, index=file_name == "segments.csv", index_label="row")
            mlflow.log_artifact(str(path))

    # Doubles in the signature: a served request may send 29 or 29.0 for an age.
    input_example = X.head(5).astype("float64")
    predicted = pipeline.predict(input_example).astype("int64")
    output_example = pd.DataFrame({segment_model.SEGMENT_COLUMN: predicted,
                                   segment_model.NAME_COLUMN: [names[s] for s in predicted]},
                                  index=input_example.index)
    info = log_pipeline_model(
        pipeline, Path(segment_model.__file__), input_example, output_example,
        model_config={"segment_names": {str(s): n for s, n in names.items()},
                      "feature_columns": list(X.columns), "clustered_columns": subsets[subset]},
    )
    version = None
    if cfg.registry.register:
        version_tags = {
            "clustering": cfg.clustering.name, COLUMN_SUBSET_PARAM: subset,
            "clustered_columns": ",".join(subsets[subset]), "data_digest": tags["data_digest"],
            **{f"segment_{s}": n for s, n in names.items()},
            **{k: f"{metrics[k]:.6f}" for k in SCORE_KEYS},
            "run_id": mlflow.active_run().info.run_id,
        }
        version = register_version(info.model_uri, cfg.registry.model_name, version_tags,
                                   cfg.registry.alias)
    return {
        "metrics": metrics, "portraits": portraits, "names": names, COLUMN_SUBSET_PARAM: subset,
        "clustered_columns": subsets[subset], "best_params": params, "chosen_trial": best.number,
        "pareto_front": ranked, "selection": checked.drop(columns="_aris"),
        "model_uri": info.model_uri, "model_version": version.version if version else None,
    }


def print_summary(result: dict, cfg: DictConfig) -> None:
    """One screen: the choice, the scores, the segments, where the run and model are."""
    m = result["metrics"]
    s = cfg.segmentation.selection
    line = "=" * 100
    params = ", ".join(f"{k}={v}" for k, v in result["best_params"].items())
    require = ", ".join(f"{k} {v}" for k, v in (s.require or {}).items()) or "nothing"
    rows = [
        line,
        f"segmentation  {cfg.clustering.name} on '{result['column_subset']}': "
        f"{', '.join(result['clustered_columns'])}",
        line,
        f"tuning     {int(m['n_trials_complete'])} complete ({int(m['n_trials_feasible'])} "
        f"feasible), {int(m['n_trials_failed'])} failed; Pareto front "
        f"{int(m['pareto_front_size'])} (study {result['study_name']})",
        f"chosen     trial {result['chosen_trial']} ({params}): rule {s.rule}, requires {require}, "
        f"prefers {s.prefer}, stability >= {s.min_stability}",
        f"scores     silhouette {m['silhouette']:.3f}  Davies-Bouldin {m['davies_bouldin']:.3f}  "
        f"Calinski-Harabasz {m['calinski_harabasz']:.0f}  stability ARI "
        f"{m['stability_ari_mean']:.3f} ± {m['stability_ari_std']:.3f}",
        f"           {int(m['n_segments'])} segments, smallest {m['min_segment_share']:.1%}; "
        f"churn rate from {m['churn_rate_best_segment']:.1%} to {m['churn_rate_worst_segment']:.1%}",
        "segments   (by churn rate; 'sets apart': std. difference from the other customers)",
        f"  {'seg':>3} {'size':>5} {'share':>6} {'churn':>6}  {'name':<42} sets apart",
    ]
    for _, r in result["portraits"].sort_values("churn_rate").iterrows():
        rows.append(f"  {r['segment']:>3} {r['size']:>5} {r['share']:>6.1%} {r['churn_rate']:>6.1%}"
                    f"  {r['name'][:42]:<42} {r['sets_apart']}")
    chosen = result["selection"][result["selection"]["chosen"]].iloc[0]
    if not chosen["meets_requirements"]:
        rows.append(f"WARNING    no Pareto solution meets the requirements ({require}); this is "
                    "the nearest miss. More trials (tune.n_trials=...) may find one.")
    if m["stability_ari_mean"] < s.min_stability:
        rows.append(f"WARNING    stability is below selection.min_stability {s.min_stability}: no "
                    f"candidate checked ({len(result['selection'])}) met the requirements and "
                    "reached it.")
    rows += summary_footer(result, cfg.registry, cfg.tracking.experiment)
    rows.append(line)
    print("\n".join(rows), flush=True)


register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="segment", version_base="1.3")
@exit_on_user_error
@exit_on_interrupt
def main(cfg: DictConfig) -> None:
    run_segmentation(cfg)


if __name__ == "__main__":
    main()
