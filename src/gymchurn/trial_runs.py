"""One nested MLflow run per tuning trial: the Optuna callback every road's tuning workers use.

`trial_logging(context)` gives a picklable recipe (`TrialLogging`) that spawned workers call to
build their own `TrialRunLogger`; each logger adds its time in MLflow to the parent run's
`RunContext` (in the process that holds it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from gymchurn.tracking import RunContext


@dataclass
class TrialLogging:
    """Picklable recipe for the per-trial logger, so spawned tuning workers log too."""

    uri: str
    context: RunContext   # the parent run; in this process its `seconds` gain the loggers' time
    metric: str | None = None  # the single objective's name; None for multi-objective studies

    def __call__(self) -> TrialRunLogger:
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        return TrialRunLogger(self.context.experiment_id, self.context.run_id, self.metric,
                              self.context)


def trial_logging(context: RunContext, metric: str | None = None) -> TrialLogging:
    import mlflow

    return TrialLogging(mlflow.get_tracking_uri(), context, metric)


class TrialRunLogger:
    """Optuna callback: one nested MLflow run per finished trial (params, scores, state).

    Uses the client API with an explicit parent id, so it also works from worker processes
    that have no active parent run of their own. A single-objective trial logs its CV score
    (`cv_<metric>`, its spread and the running mean per fold); a multi-objective trial every
    score it computed, its constraint values and whether it is feasible.
    """

    def __init__(self, experiment_id: str, parent_run_id: str, metric: str | None,
                 context: RunContext | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.context = context  # where the time spent in MLflow is added up

    def trial_metrics(self, trial) -> dict[str, float | dict[int, float]]:
        """name -> value, or name -> {step: value} for a series."""
        from optuna.trial import TrialState

        if self.metric is None:
            scores = {k: v for k, v in trial.user_attrs.items()
                      if k != "repeat_of" and isinstance(v, int | float) and not isinstance(v, bool)}
            scores.update({f"constraint_{k}": v for k, v in trial.constraints.items()})
            return scores
        metrics: dict = {}
        if trial.state == TrialState.COMPLETE:  # a pruned trial's mean is partial
            metrics[f"cv_{self.metric}"] = trial.value
        if "cv_std" in trial.user_attrs:
            metrics[f"cv_{self.metric}_std"] = trial.user_attrs["cv_std"]
        metrics[f"cv_{self.metric}_running"] = dict(trial.intermediate_values)
        return metrics

    def trial_tags(self, trial) -> dict[str, str]:
        from optuna.trial import TrialState

        from gymchurn.tuning import is_feasible

        tags = {k: str(trial.user_attrs[k]) for k in ("error", "repeat_of")
                if trial.user_attrs.get(k) is not None}
        if self.metric is None and trial.state == TrialState.COMPLETE:
            tags["feasible"] = str(is_feasible(trial.constraints)).lower()
        return tags

    def __call__(self, study, trial) -> None:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
        from optuna.trial import TrialState

        started = time.perf_counter()
        start_ms = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
        end_ms = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
        run = self.client.create_run(
            self.experiment_id,
            start_time=start_ms,
            tags={
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: f"trial-{trial.number:03d}",
                "optuna.study": study.study_name,
                "optuna.trial": str(trial.number),
                "optuna.state": trial.state.name,
            },
        )
        now = end_ms or int(time.time() * 1000)
        metrics = []
        for name, value in self.trial_metrics(trial).items():
            series = value if isinstance(value, dict) else {0: value}
            metrics += [Metric(name, float(v), now, step) for step, v in series.items()
                        if v is not None and math.isfinite(v)]
        self.client.log_batch(
            run.info.run_id,
            metrics=metrics,
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag(k, str(v)) for k, v in self.trial_tags(trial).items()],
        )
        status = "FAILED" if trial.state == TrialState.FAIL else "FINISHED"
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_ms)
        if self.context is not None:
            self.context.add({"nested trial runs (one per trial)": time.perf_counter() - started})
