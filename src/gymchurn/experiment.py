"""Churn experiment entrypoint: `make experiment model=lgbm` / `python -m gymchurn.experiment`.

load + validate -> split -> Optuna (CV on the training split) -> threshold on out-of-fold
predictions -> refit -> holdout metrics -> MLflow run (nested trial runs, plots, model) ->
registry version with alias `challenger`.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import mlflow
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState
from sklearn.inspection import permutation_importance
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_predict

from gymchurn import churn_model
from gymchurn.config import CONFIG_DIR, register_resolvers
from gymchurn.data import feature_columns, load_customers, split_holdout, table_digest
from gymchurn.errors import GymchurnError, exit_on_interrupt, exit_on_user_error, raise_keyboard_interrupt
from gymchurn.evaluation import choose_threshold, classification_metrics, tuning_metric
from gymchurn.pipeline import build_pipeline
from gymchurn.plots import classifier_figures, importance_figure, optuna_figures
from gymchurn.registry import log_pipeline_model, register_version
from gymchurn.tracking import (
    TrialRunLogger,
    git_commit,
    log_table_input,
    quiet_libraries,
    setup_experiment,
    summary_footer,
)
from gymchurn.tuning import (
    ProgressPrinter,
    best_trial,
    cv_folds,
    finished_trials,
    make_objective,
    open_study,
    run_trials,
)

SUMMARY_METRICS = ["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]


def check_config(cfg: DictConfig) -> None:
    """Values Hydra cannot check for us: fail before any work with the fix in the message."""
    if not 0 < cfg.split.test_size < 1:
        raise GymchurnError(f"split.test_size must be between 0 and 1, got {cfg.split.test_size}.")
    if int(cfg.tune.n_trials) < 1:
        raise GymchurnError(f"tune.n_trials must be at least 1, got {cfg.tune.n_trials}.")
    if int(cfg.workers) < 1:
        raise GymchurnError(f"workers must be at least 1, got {cfg.workers}.")
    if int(cfg.tune.folds) < 2:
        raise GymchurnError(f"tune.folds must be at least 2, got {cfg.tune.folds}.")
    tuning_metric(cfg.tune.metric)
    if cfg.threshold.rule not in ("f1", "cost"):
        raise GymchurnError(f"unknown threshold.rule '{cfg.threshold.rule}'. Use f1 or cost.")


def study_name_for(cfg: DictConfig, digest: str) -> str:
    """Same config and same data -> same study, so rerunning the command resumes it."""
    if cfg.tune.study_name:
        return str(cfg.tune.study_name)
    return (
        f"churn-{cfg.model.name}-{cfg.features.name}-{cfg.tune.metric}"
        f"-k{cfg.tune.folds}-seed{cfg.tune.seed}-split{cfg.split.seed}-{digest[:8]}"
    )


def repeated_cv_metrics(build, params, X, y, threshold, folds, repeats, seed) -> dict[str, float]:
    """Mean and spread of every metric over repeated stratified k-fold (training split only)."""
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed + 1)
    rows = []
    for train_idx, valid_idx in splitter.split(X, y):
        model = build(params).fit(X.iloc[train_idx], y.iloc[train_idx])
        proba = model.predict_proba(X.iloc[valid_idx])[:, 1]
        rows.append(classification_metrics(y.iloc[valid_idx], proba, threshold))
    table = pd.DataFrame(rows)
    out = {f"rcv_{k}_mean": float(v) for k, v in table.mean().items()}
    out.update({f"rcv_{k}_std": float(v) for k, v in table.std(ddof=1).items()})
    return out


def trial_counts(study) -> dict[str, int]:
    trials = finished_trials(study)
    return {
        "n_trials_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_trials_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_trials_failed": sum(t.state == TrialState.FAIL for t in trials),
    }


@dataclass
class TuningJob:
    """Everything a tuning worker needs; picklable, so extra workers can be processes."""

    cfg: dict
    X_train: pd.DataFrame
    y_train: pd.Series
    study_name: str
    experiment_id: str
    parent_run_id: str

    def run(self, worker: int) -> None:
        """Run trials of the shared study until it holds tune.n_trials finished ones."""
        cfg = OmegaConf.create(self.cfg)
        metric = cfg.tune.metric
        study = open_study(cfg.tune, self.study_name, tuning_metric(metric)[1], worker)
        columns = list(self.X_train.columns)
        build = functools.partial(build_pipeline, cfg.features, cfg.model, columns)
        folds = cv_folds(self.y_train, int(cfg.tune.folds), int(cfg.tune.seed))
        objective = make_objective(self.X_train, self.y_train, folds, cfg.model.search_space,
                                   metric, build)
        prefix = f"[worker {worker}]" if int(cfg.workers) > 1 else ""
        callbacks = [ProgressPrinter(int(cfg.tune.n_trials), metric,
                                     lambda line: print(prefix + line, flush=True))]
        if cfg.tracking.log_trials:
            callbacks.insert(0, TrialRunLogger(self.experiment_id, self.parent_run_id, metric))
        run_trials(study, objective, int(cfg.tune.n_trials), cfg.tune.timeout, callbacks)


def run_tuning_worker(job: TuningJob, worker: int) -> None:
    """Entry of an extra worker process (spawned): same study, its own sampler seed."""
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    quiet_libraries()
    setup_experiment(job.cfg["tracking"])
    try:
        job.run(worker)
    except KeyboardInterrupt:
        pass  # Optuna has marked the running trial failed; the parent reports the stop


def train(cfg: DictConfig) -> dict:
    """Run one churn experiment; return its run id, metrics, threshold and model version."""
    started = time.monotonic()
    quiet_libraries()
    check_config(cfg)
    df, provenance = load_customers(cfg.data)
    digest = table_digest(df)
    columns, target = feature_columns(cfg.data), cfg.data.target
    X_train, X_test, y_train, y_test = split_holdout(df, cfg.data, cfg.split.test_size,
                                                     cfg.split.seed)
    metric = cfg.tune.metric
    _, direction = tuning_metric(metric)
    study_name = study_name_for(cfg, digest)
    study = open_study(cfg.tune, study_name, direction)
    n_total, workers = int(cfg.tune.n_trials), int(cfg.workers)
    already = len(finished_trials(study))
    experiment_id = setup_experiment(cfg.tracking)
    if workers > 1 and cfg.n_jobs * workers > (os.cpu_count() or 1):
        cfg.n_jobs = max(1, (os.cpu_count() or 1) // workers)  # one thread per core in all
    build = functools.partial(build_pipeline, cfg.features, cfg.model, columns)

    family, features = cfg.model.name, cfg.features.name
    tags = {
        "run_type": "churn", "model_family": family, "feature_set": features,
        "tuned_metric": metric, "data_digest": digest, "data_file_sha256": provenance["sha256"],
        "split_seed": str(cfg.split.seed), "study_name": study_name, "git_commit": git_commit(),
    }
    print(f"churn experiment: {family} on '{features}' features, {len(df)} customers "
          f"({len(X_train)} train / {len(X_test)} holdout), {workers} tuning worker(s)", flush=True)
    if already:
        print(f"resuming study '{study_name}': {already} of {n_total} trials already finished",
              flush=True)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{family}-{features}",
                          tags=tags) as run:
        extra_workers = []
        try:
            mlflow.log_params({
                "model_family": family, "feature_set": features, "tune_metric": metric,
                "n_trials": n_total, "cv_folds": cfg.tune.folds, "test_size": cfg.split.test_size,
                "split_seed": cfg.split.seed, "threshold_rule": cfg.threshold.rule,
                "cost_ratio": cfg.threshold.cost_ratio, "n_rows": len(df), "workers": workers,
            })
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
            log_table_input(df, cfg.data.name, provenance["path"], digest, target, "training")

            tune_start = time.monotonic()
            job = TuningJob(OmegaConf.to_container(cfg, resolve=True), X_train, y_train,
                            study_name, experiment_id, run.info.run_id)
            spawn = multiprocessing.get_context("spawn")
            extra_workers = [spawn.Process(target=run_tuning_worker, args=(job, i))
                             for i in range(1, workers)]
            for process in extra_workers:
                process.start()
            job.run(worker=0)
            for process in extra_workers:
                process.join()
            tuning_seconds = time.monotonic() - tune_start
            best = best_trial(study)
            result = finish_run(cfg, study, best, build, X_train, y_train, X_test, y_test,
                                cv_folds(y_train, int(cfg.tune.folds), int(cfg.tune.seed)), tags)
            result.update(run_id=run.info.run_id, experiment_id=experiment_id,
                          study_name=study_name, resumed_trials=already)
            mlflow.log_metrics({"tuning_seconds": tuning_seconds,
                                "total_seconds": time.monotonic() - started})
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: the run says it was killed; the study keeps its trials.
            for process in extra_workers:
                process.terminate()  # SIGTERM: the worker fails its running trial and stops
                process.join()
            mlflow.end_run("KILLED")
            print(f"\ninterrupted: MLflow run {run.info.run_id} marked KILLED; study "
                  f"'{study_name}' keeps {len(finished_trials(study))} finished trials. "
                  "Rerun the same command to resume.", flush=True)
            raise
    print_summary(result, cfg)
    return result


def finish_run(cfg, study, best, build, X_train, y_train, X_test, y_test, folds, tags) -> dict:
    """After tuning: threshold, refit, holdout metrics, plots, model, registry version."""
    params = dict(best.params)
    metric = cfg.tune.metric
    # Threshold and cv_* metrics from out-of-fold predictions: the holdout stays unseen.
    oof = cross_val_predict(build(params), X_train, y_train, cv=folds, method="predict_proba")[:, 1]
    threshold = choose_threshold(y_train, oof, cfg.threshold.rule, cfg.threshold.cost_ratio)
    cv_metrics = classification_metrics(y_train, oof, threshold)
    pipeline = build(params).fit(X_train, y_train)
    proba_test = pipeline.predict_proba(X_test)[:, 1]
    test_metrics = classification_metrics(y_test, proba_test, threshold)

    metrics = {f"test_{k}": v for k, v in test_metrics.items()}
    metrics.update({f"cv_{k}": v for k, v in cv_metrics.items()})
    metrics.update({
        "threshold": threshold,
        f"best_trial_cv_{metric}": best.value,
        f"best_trial_cv_{metric}_std": best.user_attrs.get("cv_std", float("nan")),
        "best_trial_number": best.number,
        **trial_counts(study),
    })
    if cfg.evaluation.repeated_cv_repeats > 0:
        metrics.update(repeated_cv_metrics(
            build, params, X_train, y_train, threshold, int(cfg.evaluation.repeated_cv_folds),
            int(cfg.evaluation.repeated_cv_repeats), int(cfg.seed),
        ))
    mlflow.log_params({f"best_{k}": v for k, v in params.items()})
    mlflow.log_metrics(metrics)

    label = f"{cfg.model.name}/{cfg.features.name}"
    figures = classifier_figures(y_test, proba_test, threshold, label)
    importance = permutation_importance(
        pipeline, X_test, y_test, scoring="roc_auc", n_repeats=int(cfg.evaluation.permutation_repeats),
        random_state=int(cfg.seed),
    )
    importance_table = pd.DataFrame({
        "feature": X_test.columns, "importance_mean": importance.importances_mean,
        "importance_std": importance.importances_std,
    }).sort_values("importance_mean", ascending=False)
    figures["feature_importance"] = importance_figure(
        importance_table, f"Permutation importance on the holdout ({label})"
    )
    figures.update(optuna_figures(study))
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}.png")
    mlflow.log_table(importance_table, "feature_importance.json")
    with tempfile.TemporaryDirectory() as tmp:
        trials_csv = Path(tmp) / "trials.csv"
        study.trials_dataframe().to_csv(trials_csv, index=False)
        mlflow.log_artifact(str(trials_csv))
        holdout_csv = Path(tmp) / "holdout_predictions.csv"
        pd.DataFrame({"churn": y_test.to_numpy(), "churn_probability": proba_test},
                     index=X_test.index).to_csv(holdout_csv, index_label="row")
        mlflow.log_artifact(str(holdout_csv))

    # Doubles in the signature: a served request may send 29 or 29.0 for an age.
    input_example = X_train.head(5).astype("float64")
    output_example = pd.DataFrame(
        {churn_model.OUTPUT_COLUMN: pipeline.predict_proba(input_example)[:, 1]},
        index=input_example.index,
    )
    info = log_pipeline_model(
        pipeline, Path(churn_model.__file__), input_example, output_example,
        model_config={"threshold": threshold, "feature_columns": list(X_train.columns)},
    )
    version = None
    if cfg.registry.register:
        version_tags = {
            **{k: tags[k] for k in ("model_family", "feature_set", "tuned_metric", "data_digest",
                                    "split_seed")},
            **{f"test_{k}": f"{v:.6f}" for k, v in test_metrics.items()},
            "threshold": f"{threshold:.6f}", "test_size": str(cfg.split.test_size),
            "run_id": mlflow.active_run().info.run_id,
        }
        version = register_version(info.model_uri, cfg.registry.model_name, version_tags,
                                   cfg.registry.alias)
    return {
        "metrics": metrics, "test_metrics": test_metrics, "cv_metrics": cv_metrics,
        "threshold": threshold, "best_params": params, "model_uri": info.model_uri,
        "model_version": version.version if version else None, "n_test": len(y_test),
    }


def print_summary(result: dict, cfg: DictConfig) -> None:
    m = result["metrics"]
    metric = cfg.tune.metric
    line = "=" * 78
    rows = [
        line,
        f"churn experiment  {cfg.model.name} / {cfg.features.name}",
        line,
        f"tuning     {m['n_trials_complete']} complete, {m['n_trials_pruned']} pruned, "
        f"{m['n_trials_failed']} failed (study {result['study_name']})",
        f"           best trial {int(m['best_trial_number'])}: cv {metric} "
        f"{m[f'best_trial_cv_{metric}']:.4f} ± {m[f'best_trial_cv_{metric}_std']:.4f}",
        f"threshold  {result['threshold']:.4f}  (rule {cfg.threshold.rule}, "
        "chosen on out-of-fold predictions of the training split)",
        f"holdout    {result['n_test']} customers, never seen by tuning or the threshold:",
        "           " + "  ".join(f"{k} {result['test_metrics'][k]:.4f}" for k in SUMMARY_METRICS[:4]),
        "           " + "  ".join(f"{k} {result['test_metrics'][k]:.4f}" for k in SUMMARY_METRICS[4:]),
    ]
    if "rcv_roc_auc_mean" in m:
        rows.append(
            f"repeated   {cfg.evaluation.repeated_cv_folds}-fold x {cfg.evaluation.repeated_cv_repeats}"
            f" CV: roc_auc {m['rcv_roc_auc_mean']:.4f} ± {m['rcv_roc_auc_std']:.4f}, "
            f"accuracy {m['rcv_accuracy_mean']:.4f} ± {m['rcv_accuracy_std']:.4f}"
        )
    rows += summary_footer(result, cfg.registry, cfg.tracking.experiment)
    rows.append(line)
    print("\n".join(rows), flush=True)


register_resolvers()


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
@exit_on_user_error
@exit_on_interrupt
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
