"""Churn experiment: `make experiment model=lgbm` / `python -m gymchurn.experiment`.

compose config -> load + validate -> core (gymchurn.churn.fit: tune, threshold, refit, holdout)
-> recorder (MLflow run with nested trial runs, plots, model, registry version @challenger)
-> one-screen summary. `make compare` is this command as a Hydra multirun over the families
and feature sets; its leaderboard is written when the sweep ends (gymchurn.churn.leaderboard).
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from gymchurn.config import hydra_main
from gymchurn.errors import exit_on_interrupt, exit_on_user_error, interruption_point

SUMMARY_METRICS = ["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]


def run(cfg: DictConfig, printer=print) -> dict:
    """Run one churn experiment; return its run id, metrics, threshold and model version."""
    from gymchurn.churn import fit
    from gymchurn.data import load_customers
    from gymchurn.tracking import quiet_libraries, record, tracked_run
    from gymchurn.trial_runs import trial_logging
    from gymchurn.tuning import interrupted_note, resume_note

    started = time.monotonic()
    quiet_libraries()
    fit.check_config(cfg)
    customers, provenance = load_customers(cfg.data)
    interruption_point()  # Ctrl-C: safe points between the stages (see errors.py)
    plan = fit.plan(cfg, customers, provenance)
    study = fit.open_churn_study(cfg.tune, plan.study_name)
    printer(f"churn experiment: {cfg.model.name} on '{cfg.features.name}' features, "
            f"{len(customers)} customers ({len(plan.X_train)} train / {len(plan.X_test)} holdout), "
            f"{cfg.workers} tuning worker(s)")
    resumed = resume_note(study, int(cfg.tune.n_trials))
    if resumed:
        printer(resumed)
    with tracked_run(cfg.tracking, plan.label, plan.tags, on_interrupt=lambda: interrupted_note(study),
                     printer=printer) as run:
        record(plan.record(), run)
        interruption_point()
        logging = trial_logging(run, cfg.tune.metric) if cfg.tracking.log_trials else None
        result = fit.fit(plan, logging, study)
        logged = record(result.record(cfg.registry, time.monotonic() - started), run)
    summary = {"run_id": run.run_id, "experiment_id": run.experiment_id, "result": result,
               "metrics": result.metrics, "test_metrics": result.test_metrics,
               "cv_metrics": result.cv_metrics, "threshold": result.threshold,
               "best_params": result.best_params, "model_uri": logged.model_uri,
               "model_version": logged.version, "study_name": plan.study_name,
               "tracking_seconds": run.seconds}
    printer(summary_text(summary, cfg, run))
    return summary


def summary_text(summary: dict, cfg: DictConfig, run) -> str:
    from gymchurn.tracking import summary_footer

    m, test = summary["metrics"], summary["test_metrics"]
    metric = cfg.tune.metric
    line = "=" * 78
    rows = [
        line,
        f"churn experiment  {cfg.model.name} / {cfg.features.name}",
        line,
        f"tuning     {m['n_trials_complete']} complete, {m['n_trials_pruned']} pruned, "
        f"{m['n_trials_failed']} failed (study {summary['study_name']})",
        *([f"           {summary['result'].timeout_note}"] if summary["result"].timeout_note else []),
        f"           best trial {int(m['best_trial_number'])}: cv {metric} "
        f"{m[f'best_trial_cv_{metric}']:.4f} ± {m[f'best_trial_cv_{metric}_std']:.4f}",
        f"threshold  {summary['threshold']:.4f}  (rule {cfg.threshold.rule}, "
        "chosen on out-of-fold predictions of the training split)",
        f"holdout    {summary['result'].n_test} customers, never seen by tuning or the threshold:",
        "           " + "  ".join(f"{k} {test[k]:.4f}" for k in SUMMARY_METRICS[:4]),
        "           " + "  ".join(f"{k} {test[k]:.4f}" for k in SUMMARY_METRICS[4:]),
    ]
    if "rcv_roc_auc_mean" in m:
        rows.append(
            f"repeated   {cfg.evaluation.repeated_cv_folds}-fold x {cfg.evaluation.repeated_cv_repeats}"
            f" CV: roc_auc {m['rcv_roc_auc_mean']:.4f} ± {m['rcv_roc_auc_std']:.4f}, "
            f"accuracy {m['rcv_accuracy_mean']:.4f} ± {m['rcv_accuracy_std']:.4f}"
        )
    rows += summary_footer(run, summary["model_version"], cfg.registry)
    rows.append(line)
    return "\n".join(rows)


@hydra_main("config")
@exit_on_user_error
@exit_on_interrupt
def main(cfg: DictConfig):
    return run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
