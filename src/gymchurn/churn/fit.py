"""The churn road's core: split -> Optuna (CV on the training split) -> threshold on out-of-fold
predictions -> refit -> holdout metrics, figures and tables -> a plain `ChurnResult`.

No MLflow here: `plan` says what the run is (tags, params, dataset) before any work, `fit`
returns what to log, and the tracking stage's recorder logs both (`result.record()`). Tuning
may run in several processes on one study; each logs its trials through the callback recipe
it is given (`trial_logging`), which the core only calls.
"""

from __future__ import annotations

import functools
import multiprocessing
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gymchurn.churn import PROBABILITY_COLUMN
from gymchurn.churn.evaluate import (
    choose_threshold,
    classification_metrics,
    cv_folds,
    make_objective,
    repeated_cv_metrics,
    tuning_metric,
)
from gymchurn.data import feature_columns, split_holdout, table_digest
from gymchurn.errors import (
    HELD_SIGNALS,
    GymchurnError,
    exit_on_user_error,
    install_interrupt_handlers,
    interruption_point,
    signals_held,
)
from gymchurn.monitoring.reference import reference_statistics
from gymchurn.options import usable_cpus
from gymchurn.pipeline import build_pipeline
from gymchurn.serving import data_schema, schema_typed
from gymchurn.tracking import DatasetInput, ModelSpec, Registration, RunRecord
from gymchurn.tuning import (
    ProgressPrinter,
    best_trial,
    open_study,
    run_trials,
    study_name,
    timeout_note,
    trial_counts,
)

SERVED_MODEL = Path(__file__).with_name("served.py")  # logged as the model's code


def check_config(cfg: DictConfig) -> None:
    """Values the schema cannot check: fail before any work with the fix in the message."""
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
    threshold_cost_ratio(cfg)  # rule=cost with economics where calling never pays: refused now


def check_estimator(cfg: DictConfig) -> None:
    """The model family builds and gives probabilities, checked once before tuning: else every
    trial would fail with the same traceback (a misspelt `_target_`, LinearSVC)."""
    estimator = build_pipeline(cfg.features, cfg.model, feature_columns(cfg.data))[-1]
    if not hasattr(estimator, "predict_proba"):
        raise GymchurnError(
            f"model '{cfg.model.name}' ({type(estimator).__name__}) gives no churn probability "
            "(it has no predict_proba). Use a classifier that has one (an SVC needs "
            "probability: true), or wrap it in sklearn.calibration.CalibratedClassifierCV.")


def threshold_cost_ratio(cfg) -> float | None:
    """The cost ratio behind rule=cost: as configured, else from conf/economics/ (the middle
    keep-rate scenario), so the flag marks the customers whom a call pays for. None for f1."""
    if cfg.threshold.rule != "cost":
        return None
    if cfg.threshold.cost_ratio is not None:
        return float(cfg.threshold.cost_ratio)
    from gymchurn.economics import Assumptions

    return Assumptions.from_config(OmegaConf.to_container(cfg.economics, resolve=True)).cost_ratio()


def open_churn_study(tune_cfg, name: str, worker: int = 0):
    """The churn study: seeded TPE (seed + worker, so parallel workers explore different
    points; a single worker 0 is reproducible) and median pruning fold by fold."""
    import optuna

    return open_study(
        tune_cfg.storage, name, [tuning_metric(tune_cfg.metric)[1]],
        sampler=lambda seed: optuna.samplers.TPESampler(seed=seed), seed=int(tune_cfg.seed) + worker,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(tune_cfg.pruner.n_startup_trials),
            n_warmup_steps=int(tune_cfg.pruner.n_warmup_steps)),
    )


# ---------------------------------------------------------------- the plan: what the run is


@dataclass
class ChurnPlan:
    """The experiment before any work: config, data, split, study; what the run is tagged with."""

    cfg: DictConfig
    customers: pd.DataFrame
    provenance: dict
    digest: str
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    study_name: str

    @property
    def label(self) -> str:
        return f"{self.cfg.model.name}-{self.cfg.features.name}"

    @property
    def tags(self) -> dict[str, str]:
        cfg = self.cfg
        return {"run_type": "churn", "model_family": cfg.model.name, "feature_set": cfg.features.name,
                "tuned_metric": cfg.tune.metric, "data_digest": self.digest,
                "data_file_sha256": self.provenance["sha256"], "split_seed": str(cfg.split.seed),
                "study_name": self.study_name}

    def record(self) -> RunRecord:
        """Logged when the run opens, so even an interrupted run says what it was."""
        cfg = self.cfg
        train = self.X_train.assign(**{cfg.data.target: self.y_train})
        holdout = self.X_test.assign(**{cfg.data.target: self.y_test})
        return RunRecord(
            params={"model_family": cfg.model.name, "feature_set": cfg.features.name,
                    "tune_metric": cfg.tune.metric, "n_trials": int(cfg.tune.n_trials),
                    "cv_folds": cfg.tune.folds, "test_size": cfg.split.test_size,
                    "split_seed": cfg.split.seed, "threshold_rule": cfg.threshold.rule,
                    "cost_ratio": threshold_cost_ratio(cfg), "n_rows": len(self.customers),
                    "workers": int(cfg.workers)},
            texts={"config.yaml": OmegaConf.to_yaml(cfg, resolve=True)},
            # The rows the model is tuned and fitted on, and the holdout it is evaluated on.
            datasets=[DatasetInput(frame, f"{cfg.data.name}-{part}", self.provenance["path"],
                                   table_digest(frame), cfg.data.target, context)
                      for part, frame, context in (("train", train, "training"),
                                                   ("holdout", holdout, "eval"))],
        )


def searched_settings(cfg: DictConfig) -> dict:
    """What a trial's score depends on beyond the study name's words: the estimator and its
    search space, the feature steps and the holdout share. A changed value (a fixed `_target_`,
    test_size=0.3) starts a new study instead of resuming one tuned under the old value. The
    threads (n_jobs) are left out: they change no score, and workers share one study."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model["estimator"].pop("n_jobs", None)
    return {"model": model, "features": OmegaConf.to_container(cfg.features, resolve=True),
            "test_size": float(cfg.split.test_size)}


def plan(cfg: DictConfig, customers: pd.DataFrame, provenance: dict) -> ChurnPlan:
    """Check the config, split the table, name the study."""
    from gymchurn.churn.target import check_training_classes

    check_config(cfg)
    check_estimator(cfg)
    check_training_classes(customers, cfg)  # one class, or too few to split: say so, not sklearn
    digest = table_digest(customers)
    X_train, X_test, y_train, y_test = split_holdout(customers, cfg.data, cfg.split.test_size,
                                                     cfg.split.seed)
    name = study_name(["churn", cfg.model.name, cfg.features.name, cfg.tune.metric,
                       f"k{cfg.tune.folds}", f"seed{cfg.tune.seed}", f"split{cfg.split.seed}"],
                      digest, searched_settings(cfg), given=cfg.tune.study_name)
    workers, cores = int(cfg.workers), usable_cpus()
    if workers > 1 and cfg.n_jobs * workers > cores:
        cfg.n_jobs = max(1, cores // workers)  # one thread per core in all
    return ChurnPlan(cfg, customers, provenance, digest, X_train, X_test, y_train, y_test, name)


# ---------------------------------------------------------------- tuning, in one or more processes


@dataclass
class TuningJob:
    """Everything a tuning worker needs; picklable, so extra workers can be processes."""

    cfg: dict
    X_train: pd.DataFrame
    y_train: pd.Series
    study_name: str
    trial_logging: Any = None  # a picklable recipe returning an Optuna callback, or None

    def run(self, worker: int, study=None) -> None:
        """Run trials of the shared study until it holds tune.n_trials finished ones (`study`:
        worker 0's, already open in this process)."""
        cfg = OmegaConf.create(self.cfg)
        study = study or open_churn_study(cfg.tune, self.study_name, worker)
        build = functools.partial(build_pipeline, cfg.features, cfg.model, list(self.X_train.columns))
        folds = cv_folds(self.y_train, int(cfg.tune.folds), int(cfg.tune.seed))
        objective = make_objective(self.X_train, self.y_train, folds, cfg.model.search_space,
                                   cfg.tune.metric, build)
        prefix = f"[worker {worker}]" if int(cfg.workers) > 1 else ""
        callbacks = [ProgressPrinter(int(cfg.tune.n_trials), [cfg.tune.metric],
                                     printer=lambda line: print(prefix + line, flush=True))]
        if self.trial_logging is not None:
            callbacks.insert(0, self.trial_logging())
        run_trials(study, objective, int(cfg.tune.n_trials), cfg.tune.timeout, callbacks)


@exit_on_user_error  # its errors printed as the parent's are: one line, or a masked traceback
def run_tuning_worker(job: TuningJob, worker: int) -> None:
    """Entry of an extra worker process (spawned): same study, its own sampler seed."""
    from gymchurn.tracking import quiet_libraries

    install_interrupt_handlers(sigint=False)  # the parent stops it (SIGTERM), see there
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)  # held since the parent started us
    quiet_libraries()
    try:
        job.run(worker)
    except KeyboardInterrupt:
        pass  # Optuna has marked the running trial failed; the parent reports the stop


def tune(p: ChurnPlan, trial_logging=None, study=None) -> float:
    """Run the study with `cfg.workers` processes (this one as worker 0, on `study` if it is
    open already); return the seconds it took."""
    start = time.monotonic()
    job = TuningJob(OmegaConf.to_container(p.cfg, resolve=True), p.X_train, p.y_train,
                    p.study_name, trial_logging)
    spawn = multiprocessing.get_context("spawn")
    extra = [spawn.Process(target=run_tuning_worker, args=(job, i))
             for i in range(1, int(p.cfg.workers))]
    try:
        # A worker is born with Ctrl-C and SIGTERM held (the forking thread's signal mask is
        # inherited) until its handlers are in place: a signal during its imports then stops
        # it at its first safe point, without a traceback.
        with signals_held():
            for process in extra:
                process.start()
        job.run(0, study)
        for process in extra:
            process.join()
    except KeyboardInterrupt:
        stop_workers(extra)
        raise
    return time.monotonic() - start


def stop_workers(processes) -> None:
    """SIGTERM: each worker stops at its next safe point and fails its running trial; a
    worker that has not stopped after 2 minutes, or when Ctrl-C comes again, is killed."""
    started = [p for p in processes if p.pid is not None]
    try:
        for process in started:
            process.terminate()
        for process in started:
            process.join(timeout=120)
    finally:
        for process in started:
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------- the result


@dataclass
class ChurnResult:
    """Everything one churn experiment produced, as plain values."""

    plan: ChurnPlan
    pipeline: Any
    threshold: float
    best_params: dict
    metrics: dict                 # every metric the run logs
    test_metrics: dict
    cv_metrics: dict
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    tuning_seconds: float = 0.0
    timeout_note: str | None = None  # set when tune.timeout cut the study short
    reference: dict = field(default_factory=dict)  # what monitoring needs (monitoring.reference)

    @property
    def n_test(self) -> int:
        return len(self.plan.y_test)

    def model(self) -> ModelSpec:
        """The registered model: the whole pipeline, one output column (churn probability)."""
        # The input example: the schema's types, as the training file writes them (5.0 months).
        example = schema_typed(self.plan.X_train.head(5), self.plan.cfg.data,
                               self.plan.provenance.get("stored_kinds"))
        output = pd.DataFrame({PROBABILITY_COLUMN: self.pipeline.predict_proba(example)[:, 1]},
                              index=example.index)
        return ModelSpec(self.pipeline, SERVED_MODEL, example, output,
                         {"threshold": self.threshold, "feature_columns": list(example.columns),
                          "data_schema": data_schema(self.plan.cfg.data),
                          "reference": self.reference})

    def record(self, registry_cfg=None, total_seconds: float | None = None) -> RunRecord:
        """What the run logs at the end; registered as a new version when `registry_cfg` says so."""
        tags = self.plan.tags
        registration = None
        if registry_cfg is not None and registry_cfg.register:
            registration = Registration(registry_cfg.model_name, {
                **{k: tags[k] for k in ("model_family", "feature_set", "tuned_metric",
                                        "data_digest", "split_seed")},
                **{f"test_{k}": f"{v:.6f}" for k, v in self.test_metrics.items()},
                "threshold": f"{self.threshold:.6f}", "test_size": str(self.plan.cfg.split.test_size),
                "threshold_rule": self.plan.cfg.threshold.rule,
            }, registry_cfg.alias)
        timings = {"tuning_seconds": self.tuning_seconds}
        cut = {"tuning_cut_short": self.timeout_note} if self.timeout_note else {}
        if total_seconds is not None:
            timings["total_seconds"] = total_seconds
        return RunRecord(
            # The chosen trial's parameters under the trial runs' own names, so that the
            # parent run lines up with its trials in MLflow's compare view.
            params=dict(self.best_params),
            metrics={**self.metrics, **timings}, tags=cut,
            figures={f"plots/{name}.png": fig for name, fig in self.figures.items()},
            tables=self.tables, model=self.model(), registration=registration,
        )


def fit(p: ChurnPlan, trial_logging=None, study=None) -> ChurnResult:
    """Tune, choose the threshold, refit, evaluate on the holdout; return the result. `study`:
    the plan's study when the caller has opened it already (one connection per process)."""
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import cross_val_predict

    from gymchurn.plots import classifier_figures, importance_figure, optuna_figures

    cfg = p.cfg
    study = study or open_churn_study(cfg.tune, p.study_name)
    tuning_seconds = tune(p, trial_logging, study)
    best = best_trial(study)
    params, metric = dict(best.params), cfg.tune.metric
    build = functools.partial(build_pipeline, cfg.features, cfg.model, feature_columns(cfg.data))
    folds = cv_folds(p.y_train, int(cfg.tune.folds), int(cfg.tune.seed))
    # Threshold and cv_* metrics from out-of-fold predictions: the holdout stays unseen.
    interruption_point()  # between stages: Ctrl-C stops the work here (see errors.py)
    oof = cross_val_predict(build(params), p.X_train, p.y_train, cv=folds,
                            method="predict_proba")[:, 1]
    threshold = choose_threshold(p.y_train, oof, cfg.threshold.rule, threshold_cost_ratio(cfg))
    cv_metrics = classification_metrics(p.y_train, oof, threshold)
    interruption_point()
    pipeline = build(params).fit(p.X_train, p.y_train)
    proba_test = pipeline.predict_proba(p.X_test)[:, 1]
    test_metrics = classification_metrics(p.y_test, proba_test, threshold)

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
            build, params, p.X_train, p.y_train, threshold, int(cfg.evaluation.repeated_cv_folds),
            int(cfg.evaluation.repeated_cv_repeats), int(cfg.seed),
        ))

    interruption_point()
    label = f"{cfg.model.name}/{cfg.features.name}"
    figures = classifier_figures(p.y_test, proba_test, threshold, label)
    importance = permutation_importance(
        pipeline, p.X_test, p.y_test, scoring="roc_auc",
        n_repeats=int(cfg.evaluation.permutation_repeats), random_state=int(cfg.seed),
    )
    importance_table = pd.DataFrame({
        "feature": p.X_test.columns, "importance_mean": importance.importances_mean,
        "importance_std": importance.importances_std,
    }).sort_values("importance_mean", ascending=False)
    figures["feature_importance"] = importance_figure(
        importance_table, f"Permutation importance on the holdout ({label})")
    interruption_point()
    figures.update(optuna_figures(study))
    holdout = pd.DataFrame({"churn": p.y_test.to_numpy(), "churn_probability": proba_test},
                           index=p.X_test.index).rename_axis("row").reset_index()
    tables = {"feature_importance.json": importance_table, "trials.csv": study.trials_dataframe(),
              "holdout_predictions.csv": holdout}
    # Monitoring's reference travels with the model (its settings), so judging a new month
    # never needs the training file.
    reference = reference_statistics(p.X_train, OmegaConf.to_container(cfg.data.columns, resolve=True),
                                     oof, proba_test, p.y_test.to_numpy(), threshold, importance_table)
    return ChurnResult(p, pipeline, threshold, params, metrics, test_metrics, cv_metrics,
                       figures, tables, tuning_seconds,
                       timeout_note(study, int(cfg.tune.n_trials), cfg.tune.timeout), reference)
