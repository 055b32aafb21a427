"""The report's core: the registered models and the customer table -> the five sections.

Reads `@champion` of the churn classifier and of the segmentation (else their newest versions,
saying so), draws the classifier's own holdout again, and builds each section from plain
inputs. Returns the sections and what they were built from; rendering and logging are the
entrypoint's (`gymchurn.report`).
"""

from __future__ import annotations

import time

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gymchurn.churn.score import band_cuts
from gymchurn.data import feature_columns, load_customers, split_holdout, table_digest
from gymchurn.errors import GymchurnError
from gymchurn.registry import (
    alias_or_newest,
    describe_version,
    load_fitted_pipeline,
    load_version,
)
from gymchurn.reporting.blocks import Section
from gymchurn.reporting.capacity import check_shares
from gymchurn.reporting.drivers import churn_drivers, permutation_table
from gymchurn.reporting.economics import Assumptions
from gymchurn.reporting.groups import target_groups
from gymchurn.reporting.overview import data_overview, strong_pairs
from gymchurn.reporting.performance import model_performance
from gymchurn.reporting.portraits import customer_portraits
from gymchurn.reporting.recommendations import Rules, ScoredTable, recommendations
from gymchurn.segments.model import assign_segments


def find_model(name: str, alias: str, kind: str, command: str):
    """(ModelVersion, how it was chosen), or an error saying which command registers one."""
    try:
        return alias_or_newest(name, (alias,))
    except GymchurnError as err:
        raise GymchurnError(
            f"the report needs a registered {kind} ('{name}') and there is none: run `{command}` "
            f"first. ({err})"
        ) from None


def check_scenarios(cfg: DictConfig) -> None:
    """Each what-if sets known columns to values conf/data/gym.yaml allows; the campaign sizes
    are fractions."""
    check_shares(cfg.capacity_shares)
    Assumptions.from_config(OmegaConf.to_container(cfg.economics))
    columns = cfg.data.columns
    for scenario in cfg.what_if:
        for column, value in scenario.set.items():
            rule = columns.get(column)
            allowed = rule is not None and column != cfg.data.target and (
                value in rule["values"] if rule.get("values") else rule.min <= value <= rule.max)
            if not allowed:
                raise GymchurnError(
                    f"what-if '{scenario.name}' sets {column}={value}, which the data rules do not "
                    "allow (conf/data/gym.yaml). Fix `what_if` in conf/report.yaml."
                )


def holdout_split(cfg: DictConfig, df: pd.DataFrame, version, digest: str):
    """The classifier version's own holdout (its recorded split seed and size) and a note."""
    tags = version.tags or {}
    seed = int(tags.get("split_seed", cfg.holdout.seed))
    size = float(tags.get("test_size", cfg.holdout.test_size))
    _, X_test, _, y_test = split_holdout(df, cfg.data, size, seed)
    if tags.get("data_digest") == digest and "split_seed" in tags:
        note = (f"Its holdout is re-drawn exactly as in training (split seed {seed}, "
                f"{size:.0%} of the table): customers the model never saw.")
    else:
        note = (f"It was trained on another table or did not record its split, so this holdout "
                f"(split seed {seed}, {size:.0%}) may include customers it trained on: read its "
                "metrics as optimistic.")
    return X_test, y_test, note


def family_runs(version, digest: str) -> pd.DataFrame | None:
    """Each family's best run (by CV) on this table, from the champion's MLflow experiment."""
    import mlflow

    from gymchurn.churn.leaderboard import leaderboard

    run_id = (version.tags or {}).get("run_id") or version.run_id
    if not run_id:
        return None
    run = mlflow.get_run(run_id)
    return leaderboard(run.info.experiment_id, digest, run.data.tags.get("tuned_metric", "roc_auc"))


def segment_labels(name: str, version, customers: pd.DataFrame, columns) -> tuple:
    """(labels, names, clustered columns) of the segmentation version for every customer."""
    assigned = assign_segments(load_version(name, version.version), customers[columns])
    names = dict(zip(assigned["segment"].astype(int), assigned["segment_name"], strict=True))
    clustered = [c for c in (version.tags or {}).get("clustered_columns", "").split(",") if c]
    return assigned["segment"].to_numpy(), names, clustered


def build_sections(cfg: DictConfig, printer=print) -> tuple[list[Section], dict]:
    """Every section of the report, and what it was built from (the registry must be open)."""
    check_scenarios(cfg)
    churn_version, churn_how = find_model(cfg.classifier, cfg.alias, "churn model",
                                          "make experiment")
    segment_version, segment_how = find_model(cfg.segmentation, cfg.alias, "segmentation",
                                              "make segment")
    for version, how in ((churn_version, churn_how), (segment_version, segment_how)):
        printer(f"using {describe_version(version)}: {how}")

    df, _ = load_customers(cfg.data)
    digest = table_digest(df)
    target, columns = cfg.data.target, feature_columns(cfg.data)
    pipeline, threshold = load_fitted_pipeline(cfg.classifier, churn_version.version)
    X_test, y_test, holdout_note = holdout_split(cfg, df, churn_version, digest)
    labels, names, clustered = segment_labels(cfg.segmentation, segment_version, df, columns)
    phrases = OmegaConf.to_container(cfg.data.phrases) if "phrases" in cfg.data else {}
    data_columns = OmegaConf.to_container(cfg.data.columns)
    bands, cuts = band_cuts(cfg.risk_bands, threshold)

    champion = f"{describe_version(churn_version)}, {churn_how}"
    sections = []
    timed = time.monotonic()

    def done(section: Section) -> Section:
        nonlocal timed
        printer(f"  {section.title:<28} {time.monotonic() - timed:5.1f} s")
        timed = time.monotonic()
        sections.append(section)
        return section

    proba = pipeline.predict_proba(df[columns])[:, 1]  # every customer: sections 2 and 5
    permutation = permutation_table(pipeline, X_test, y_test, int(cfg.permutation_repeats),
                                    int(cfg.seed))
    done(data_overview(df, target, data_columns, float(cfg.strong_correlation)))
    done(model_performance(pipeline, threshold, X_test, y_test, proba, champion,
                           holdout_note, family_runs(churn_version, digest),
                           list(cfg.capacity_shares),
                           Assumptions.from_config(OmegaConf.to_container(cfg.economics))))
    done(churn_drivers(pipeline, X_test, df, target, data_columns, phrases,
                       OmegaConf.to_container(cfg.patterns), permutation, int(cfg.top_drivers),
                       int(cfg.seed)))
    done(customer_portraits(df, target, labels, names, clustered, phrases,
                            f"{describe_version(segment_version)}, {segment_how}",
                            int(cfg.portrait_features)))
    done(target_groups(df, target, columns, data_columns,
                       OmegaConf.to_container(cfg.data.labels) if "labels" in cfg.data else {},
                       phrases, OmegaConf.to_container(cfg.groups), int(cfg.seed)))
    done(recommendations(
        ScoredTable(pipeline, threshold, df, target, columns, proba, bands, cuts), labels, names,
        dict(zip(permutation["feature"], permutation["importance_mean"], strict=True)),
        strong_pairs(df, columns, float(cfg.strong_correlation)),
        Rules(OmegaConf.to_container(cfg.what_if), int(cfg.target_groups), float(cfg.min_drop),
              float(cfg.negligible_importance))))
    sources = {
        "classifier": f"{cfg.classifier} v{churn_version.version}, {churn_how}",
        "segmentation": f"{cfg.segmentation} v{segment_version.version}, {segment_how}",
        "classifier_version": churn_version.version, "segmentation_version": segment_version.version,
        "data_digest": digest, "n_customers": len(df),
    }
    return sections, sources
