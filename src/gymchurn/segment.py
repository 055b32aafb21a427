"""Segmentation experiment: `make segment clustering=kmeans` / `python -m gymchurn.segment`.

compose config -> load + validate -> core (gymchurn.segments.fit: Optuna over column subsets
and clusterer arguments, Pareto front, selection + stability, portraits) -> recorder (MLflow
run with nested trial runs, plots, portraits, model, registry version of
`gym-churn-segmentation` @challenger) -> one-screen summary.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from gymchurn.config import hydra_main
from gymchurn.errors import exit_on_interrupt, exit_on_user_error, interruption_point


def run(cfg: DictConfig, printer=print) -> dict:
    """Run one segmentation experiment; return its run id, scores, portraits and model version."""
    from gymchurn.data import load_customers
    from gymchurn.segments import fit
    from gymchurn.tracking import quiet_libraries, record, tracked_run
    from gymchurn.trial_runs import trial_logging
    from gymchurn.tuning import interrupted_note, resume_note

    started = time.monotonic()
    quiet_libraries()
    fit.check_config(cfg)
    customers, provenance = load_customers(cfg.data)
    interruption_point()  # Ctrl-C: safe points between the stages (see errors.py)
    plan = fit.plan(cfg, customers, provenance)
    study = fit.open_segment_study(cfg.tune, plan.study_name, plan.objectives)
    printer(f"segmentation experiment: {cfg.clustering.name} on {len(customers)} customers, "
            f"choosing among {len(plan.subsets)} column subsets; objectives "
            f"{', '.join(plan.objectives)}")
    for name, pairs in plan.refused.items():
        shown = ", ".join(f"{a} ~ {b} (r = {r:.2f})" for a, b, r in pairs)
        printer(f"not searched: column subset '{name}' holds near duplicates {shown}")
    resumed = resume_note(study, int(cfg.tune.n_trials))
    if resumed:
        printer(resumed)
    with tracked_run(cfg.tracking, f"segment-{cfg.clustering.name}", plan.tags,
                     on_interrupt=lambda: interrupted_note(study), printer=printer) as run:
        record(plan.record(), run)
        interruption_point()
        callbacks = [trial_logging(run)()] if cfg.tracking.log_trials else []
        result = fit.fit(plan, callbacks, printer, study)
        logged = record(result.record(cfg.registry, time.monotonic() - started), run)
    summary = {"run_id": run.run_id, "experiment_id": run.experiment_id, "result": result,
               "metrics": result.metrics, "portraits": result.portraits, "names": result.names,
               "column_subset": result.column_subset, "clustered_columns": result.clustered_columns,
               "best_params": result.best_params, "chosen_trial": result.chosen_trial,
               "pareto_front": result.pareto_front, "selection": result.selection,
               "model_uri": logged.model_uri, "model_version": logged.version,
               "study_name": plan.study_name, "tracking_seconds": run.seconds}
    printer(summary_text(summary, cfg, run))
    return summary


def summary_text(summary: dict, cfg: DictConfig, run) -> str:
    """One screen: the choice, the scores, the segments, where the run and model are."""
    from gymchurn.segments.objectives import OBJECTIVES
    from gymchurn.tracking import summary_footer

    m = summary["metrics"]
    s = cfg.segmentation.selection
    line = "=" * 100
    params = ", ".join(f"{k}={v}" for k, v in summary["best_params"].items())
    require = ", ".join(f"{k} {v}" for k, v in (s.require or {}).items()) or "nothing"
    rows = [
        line,
        f"segmentation  {cfg.clustering.name} on '{summary['column_subset']}': "
        f"{', '.join(summary['clustered_columns'])}",
        line,
        f"tuning     {int(m['n_trials_complete'])} complete ({int(m['n_trials_feasible'])} "
        f"feasible), {int(m['n_trials_failed'])} failed; Pareto front "
        f"{int(m['pareto_front_size'])} (study {summary['study_name']})",
        *([f"           {summary['result'].timeout_note}"] if summary["result"].timeout_note else []),
        f"chosen     trial {summary['chosen_trial']} ({params}): rule {s.rule}, requires {require}, "
        f"prefers {s.prefer}, stability >= {s.min_stability}",
        f"scores     silhouette {m['silhouette']:.3f}  Davies-Bouldin {m['davies_bouldin']:.3f}  "
        f"Calinski-Harabasz {m['calinski_harabasz']:.0f}  stability ARI "
        f"{m['stability_ari_mean']:.3f} ± {m['stability_ari_std']:.3f}",
        f"           {int(m['n_segments'])} segments, smallest {m['min_segment_share']:.1%}; "
        f"churn rate from {m['churn_rate_best_segment']:.1%} to {m['churn_rate_worst_segment']:.1%}",
        f"findable   rules of <= {int(m['max_conditions'])} conditions; fidelity to the clusters "
        f">= {m['rule_fidelity_min']:.2f} (clusters' silhouette {m['cluster_silhouette']:.3f}, "
        f"spread {m['rule_spread_increase']:+.1%} from rules)",
        f"distinct   the least distinct segment stands out on {int(m['distinct_columns_min'])} "
        f"column groups; near-duplicate inputs {int(m['correlated_input_pairs'])}",
        "segments   (by churn rate; rule = the CRM filter; 'sets apart': std. difference)",
        f"  {'seg':>3} {'size':>5} {'share':>6} {'churn':>6}  name / rule / sets apart",
    ]
    for _, r in summary["portraits"].sort_values("churn_rate").iterrows():
        rows.append(f"  {r['segment']:>3} {r['size']:>5} {r['share']:>6.1%} {r['churn_rate']:>6.1%}"
                    f"  {r['name']}")
        rows.append(f"  {'':>23}  {r['rule']}; {r['sets_apart']}")
    chosen = summary["selection"][summary["selection"]["chosen"]].iloc[0]
    if not chosen["meets_requirements"]:
        missed = ", ".join(f"{k} {chosen[k]:.3g} (needs {'>=' if OBJECTIVES[k] == 'maximize' else '<='} {v})"
                           for k, v in (s.require or {}).items()
                           if (chosen[k] < v if OBJECTIVES[k] == "maximize" else chosen[k] > v))
        rows.append(f"WARNING    no Pareto solution meets every requirement; this is the nearest "
                    f"miss: {missed}. More trials (tune.n_trials=...) or other column subsets "
                    "may find one (experiments/segmentation-study.md says what the data allows).")
    if m["stability_ari_mean"] < s.min_stability:
        rows.append(f"WARNING    stability is below selection.min_stability {s.min_stability}: no "
                    f"candidate checked ({len(summary['selection'])}) met the requirements and "
                    "reached it.")
    rows += summary_footer(run, summary["model_version"], cfg.registry)
    rows.append(line)
    return "\n".join(rows)


@hydra_main("segment")
@exit_on_user_error
@exit_on_interrupt
def main(cfg: DictConfig):
    return run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
