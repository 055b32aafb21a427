"""The typed schema of every entrypoint's config (Hydra's Structured Config pattern).

gymchurn.config stores each as `<name>_schema` in Hydra's ConfigStore, which the primary YAML
files list first in their defaults; gymchurn.options checks the bounds that `number` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

# ---------------------------------------------------------------- schema
# Hydra's "Structured Config schema" pattern: each primary YAML lists `<name>_schema` first in its
# defaults, so everything merged after it (group files, the YAML itself, command-line overrides)
# is checked against these types and `seed=abc` fails at composition. The values stay in the YAML
# files (MISSING here means "the YAML sets it"); interpolations such as ${seed} or ${root:} are
# allowed in any typed field. Open-ended nodes (estimators, search spaces, column rules, gates,
# report scenarios) are `Any`, so their YAML stays free-form. `X | None` accepts null.
# Types are not all: `number(...)` also gives a field's allowed range, and
# `gymchurn.options.check_options` (run by `hydra_main` before the task) refuses a value outside
# it, NaN or infinity, and a boolean option given on the command line as anything but true/false
# (OmegaConf alone reads `force=no`, `force=2` or `force=on` as booleans).

SEED_MAX = 2**32 - 1  # NumPy's seeds are 32-bit
CPUS = "cpus"         # an upper bound: the CPUs this process may run on (options.usable_cpus)


def number(low: float | None = None, high: float | str | None = None, *, exclusive: bool = False):
    """A numeric field the YAML sets, allowed from `low` to `high` (None: no bound); with
    `exclusive`, the bounds themselves are not allowed."""
    return field(default=MISSING, metadata={"bounds": (low, high, exclusive)})


@dataclass
class DataConfig:
    path: str = MISSING
    shared_path: str | None = MISSING
    url: str | None = MISSING
    sha256: str | None = MISSING
    name: str = MISSING
    target: str = MISSING
    columns: dict[str, Any] = MISSING
    phrases: dict[str, Any] = field(default_factory=dict)  # optional: words for generated text
    portrait: dict[str, str] = field(default_factory=dict)  # optional: a segment's clauses
    labels: dict[str, Any] = field(default_factory=dict)  # optional: a column's plain name
    negative_labels: dict[str, Any] = field(default_factory=dict)  # optional: its negative values' name


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: str | None = MISSING
    experiment: str = MISSING
    log_trials: bool = MISSING


@dataclass
class RegistryConfig:
    model_name: str = MISSING
    alias: str | None = MISSING
    register: bool = MISSING


@dataclass
class HoldoutConfig:
    test_size: float = number(0, 1, exclusive=True)
    seed: int = number(0, SEED_MAX)


@dataclass
class PrunerConfig:
    n_startup_trials: int = number(0)
    n_warmup_steps: int = number(0)


@dataclass
class TuneConfig:
    """conf/tune/: the churn study's budget."""

    n_trials: int = number(1)
    timeout: float | None = number(0, exclusive=True)
    folds: int = number(2)
    metric: str = MISSING
    seed: int = number(0, SEED_MAX)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: str = MISSING
    study_name: str | None = MISSING


@dataclass
class ThresholdConfig:
    rule: str = MISSING
    cost_ratio: float | None = number(0, exclusive=True)  # None: from `economics`


@dataclass
class EvaluationConfig:
    repeated_cv_folds: int = number(2)
    repeated_cv_repeats: int = number(0)  # 0: no repeated CV
    permutation_repeats: int = number(1)


@dataclass
class ChurnConfig:
    """conf/config.yaml: the churn experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    features: Any = MISSING
    model: Any = MISSING
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = number(0, SEED_MAX)
    n_jobs: int = number(1)
    workers: int = number(1, CPUS)
    split: HoldoutConfig = field(default_factory=HoldoutConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    economics: Any = MISSING  # conf/economics/: checked by gymchurn.economics.Assumptions
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)


@dataclass
class SegmentTuneConfig:
    """conf/segment_tune/: the segmentation study's budget (placed at `tune`)."""

    n_trials: int = number(1)
    timeout: float | None = number(0, exclusive=True)
    seed: int = number(0, SEED_MAX)
    sampler: str = MISSING
    n_startup_trials: int = number(0)
    population_size: int = number(2)
    silhouette_sample_size: int | None = number(2)
    bootstraps: int = number(2)
    storage: str = MISSING
    study_name: str | None = MISSING


@dataclass
class ConstraintsConfig:
    min_segments: int = number(2)
    max_segments: int = number(2)
    min_segment_share: float = number(0, 1)


@dataclass
class SelectionConfig:
    require: dict[str, float] | None = MISSING
    rule: str = MISSING
    prefer: str = MISSING
    min_stability: float = number(-1, 1)  # an adjusted Rand index
    stability_candidates: int = number(1)


@dataclass
class SegmentRulesConfig:
    max_depth: int = number(1, 3)  # at most three conditions per rule (issue 14)
    max_leaves: int | None = number(2)


@dataclass
class SegmentationConfig:
    column_subsets: Any = MISSING
    search: Any = MISSING
    log_columns: list[str] = MISSING
    near_duplicate_r: float = number(0, 1)
    rules: SegmentRulesConfig = field(default_factory=SegmentRulesConfig)
    objectives: list[str] = MISSING
    distinct_min_effect: float = number(0)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass
class PortraitsConfig:
    top_features: int = number(1)
    name_words: int = number(1)
    min_effect: float = number(0)
    max_correlation: float = number(0, 1)
    lean_effect: float = number(0)
    phrases: Any = MISSING
    templates: Any = MISSING
    measure_min_cover: float = number(0, 1)


@dataclass
class SegmentConfig:
    """conf/segment.yaml: the segmentation experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    clustering: Any = MISSING
    tune: SegmentTuneConfig = field(default_factory=SegmentTuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = number(0, SEED_MAX)
    n_jobs: int = number(1)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    portraits: PortraitsConfig = field(default_factory=PortraitsConfig)
    measures: Any = MISSING  # conf/measures/: checked by churn.actions.load_catalogue
    registry: RegistryConfig = field(default_factory=RegistryConfig)


@dataclass
class SegmentLookupConfig:
    model_name: str = MISSING
    enabled: bool = MISSING


@dataclass
class ReasonsConfig:
    """conf/reasons/: whose reasons, and how LightGBM contributions are computed."""

    rows: str = MISSING    # flagged | all | none: checked by gymchurn.predict
    method: str = MISSING  # compiled | native: checked by gymchurn.churn.reasons


@dataclass
class PredictConfig:
    """conf/predict.yaml: batch scoring."""

    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    risk_bands: Any = MISSING
    measures: Any = MISSING  # conf/measures/: checked by churn.actions.load_catalogue
    input: str = MISSING  # stays ??? in the YAML: the command line must give it
    output: str | None = MISSING
    model_name: str = MISSING
    alias: str | None = MISSING
    version: int | None = number(1)
    reasons: ReasonsConfig = field(default_factory=ReasonsConfig)
    reason_batch_rows: int = number(1)
    n_jobs: int = number(1)
    segmentation: SegmentLookupConfig = field(default_factory=SegmentLookupConfig)


@dataclass
class LockConfig:
    """How long a promotion waits for another one of the same model, and when a lock is stale."""

    wait_seconds: float = number(0)
    lease_seconds: float = number(0, exclusive=True)


@dataclass
class PromoteConfig:
    """conf/promote.yaml: the promotion gate."""

    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    action: str = MISSING
    model_name: str = MISSING
    version: int | None = number(1)
    force: bool = MISSING
    reason: str | None = MISSING
    user: str | None = MISSING
    record_experiment: str = MISSING
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    lock: LockConfig = field(default_factory=LockConfig)
    gates: Any = MISSING


@dataclass
class OutOfFoldConfig:
    folds: int = number(2)


@dataclass
class CaveatsConfig:
    visits_now: str = MISSING
    visits_usual: str = MISSING
    built_from_visits_now: list[str] = field(default_factory=list)
    self_selected: str = MISSING
    deciles: int = number(2)


@dataclass
class ReportConfig:
    """conf/report.yaml: the retention-strategy report."""

    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    risk_bands: Any = MISSING
    measures: Any = MISSING  # conf/measures/: checked by churn.actions.load_catalogue
    classifier: str = MISSING
    segmentation: str = MISSING
    alias: str = MISSING
    record_experiment: str = MISSING
    output_dir: str = MISSING
    seed: int = number(0, SEED_MAX)
    holdout: HoldoutConfig = field(default_factory=HoldoutConfig)
    permutation_repeats: int = number(1)
    top_drivers: int = number(1)
    strong_correlation: float = number(0, 1)
    target_groups: int = number(1)
    min_drop: float = number(0, 1)
    negligible_importance: float = number(0)
    portrait_features: int = number(1)
    capacity_shares: Any = MISSING  # a list of fractions in (0, 1]: checked by reporting.capacity
    economics: Any = MISSING  # conf/economics/: checked by gymchurn.economics.Assumptions
    pilot: Any = MISSING  # what to try: checked by reporting.measures.check_pilot
    groups: Any = MISSING  # cohort curve and rule groups (reporting.groups)
    out_of_fold: OutOfFoldConfig = field(default_factory=OutOfFoldConfig)
    call_list_show: int = number(1)
    caveats: CaveatsConfig = field(default_factory=CaveatsConfig)
    patterns: Any = MISSING
    what_if: Any = MISSING


@dataclass
class DashboardConfig:
    """conf/dashboard.yaml: optuna-dashboard on the studies' storage."""

    storage: str = MISSING
    host: str = MISSING
    port: int = number(1, 65535)


@dataclass
class DriftConfig:
    psi_watch: float = number(0)
    psi_drift: float = number(0)
    alpha: float = number(0, 1, exclusive=True)
    out_of_range_watch: float = number(0, 1)


@dataclass
class BootstrapConfig:
    replicates: int = number(20)
    level: float = number(0, 1, exclusive=True)


@dataclass
class MonitorConfig:
    """conf/monitor.yaml: the monthly check of the champion on a new customer table."""

    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    risk_bands: Any = MISSING
    measures: Any = MISSING  # conf/measures/: checked by churn.actions.load_catalogue
    reasons: ReasonsConfig = field(default_factory=ReasonsConfig)
    input: str = MISSING  # stays ??? in the YAML: the command line must give it
    name: str | None = MISSING
    note: str | None = MISSING
    output_dir: str | None = MISSING
    model_name: str = MISSING
    alias: str | None = MISSING
    version: int | None = number(1)
    record_experiment: str = MISSING
    seed: int = number(0, SEED_MAX)
    segmentation: SegmentLookupConfig = field(default_factory=SegmentLookupConfig)
    capacity: float = number(0, 1, exclusive=True)
    call_list_show: int = number(1)
    n_jobs: int = number(1)
    reason_batch_rows: int = number(1)
    calibration_deciles: int = number(2)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    rules: Any = MISSING  # checked by gymchurn.monitoring.verdict.check_rules


SCHEMAS = {"config": ChurnConfig, "segment": SegmentConfig, "predict": PredictConfig,
           "promote": PromoteConfig, "report": ReportConfig, "dashboard": DashboardConfig,
           "monitor": MonitorConfig}
