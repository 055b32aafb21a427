"""Promotion gate and rollback over the registry aliases (the core of `make promote`).

The challenger takes the `champion` alias only if it beats the champion on the gate's metric by
at least the margin, on the same holdout (same data digest, split seed and test size; if those
differ, both are re-scored on one fixed holdout rather than comparing unlike numbers), or if
there is no champion yet. `force=true version=N` promotes anyway and says so. The champion it
replaces keeps `previous-champion`, so `make rollback` is one command. Every decision (who,
when, both versions' metrics, reason, the aliases before and after) is written as `promotion.*`
version tags and as a run in the `gym-churn-promotion` experiment (through the tracking stage's
recorder); a failed check changes nothing.

Two promotions or rollbacks of one model at once (two users, two terminals) run one after the
other: each holds the model's lock (gymchurn.lifecycle.lock) from reading the aliases to
moving them, decides from what it read under the lock, checks the lock is still its own before
writing and reads the aliases back after. The decision's run ends FINISHED only when the
aliases were moved as recorded.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from gymchurn.data import load_customers, split_holdout, table_digest
from gymchurn.errors import GymchurnError, interruption_point
from gymchurn.lifecycle.lock import ModelLock, model_lock
from gymchurn.registry import (
    alias_versions,
    load_fitted_pipeline,
    load_version,
    registered_model,
    resolve_version,
    set_alias,
    set_version_tags,
)
from gymchurn.tracking import RunRecord, record, tracked_run

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
LOWER_IS_BETTER = {"log_loss", "brier", "davies_bouldin"}


@dataclass
class Comparison:
    """Both versions' metrics on one holdout, and how that holdout was chosen."""

    metrics: dict[str, dict[str, float]]  # "challenger"/"champion" -> metric -> value
    basis: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- metrics of a version


def recorded_metric(version, name: str) -> float | None:
    """A metric recorded with a version: tag test_<name> or <name>, else its run's metric."""
    tags = version.tags or {}
    for key in (f"test_{name}", name):
        if key in tags:
            return float(tags[key])
    if version.run_id:
        import mlflow

        run_metrics = mlflow.get_run(version.run_id).data.metrics
        for key in (f"test_{name}", name):
            if key in run_metrics:
                return float(run_metrics[key])
    return None


def holdout_of(version, basis_tags) -> tuple | None:
    """What a version's recorded metrics were measured on (the gate's `same_basis` tags:
    data digest, split seed, ...), or None if that was not recorded."""
    tags = version.tags or {}
    if any(k not in tags for k in basis_tags):
        return None
    return tuple(tags[k] for k in basis_tags)


def fixed_holdout(cfg: DictConfig) -> tuple[pd.DataFrame, pd.Series, str]:
    """The configured stratified holdout of the configured table, and the table's digest."""
    from gymchurn.churn.target import check_classes

    df, _ = load_customers(cfg.data)
    check_classes(df[cfg.data.target], float(cfg.holdout.test_size), settings="holdout.test_size")
    digest = table_digest(df)
    _, X_test, _, y_test = split_holdout(df, cfg.data, cfg.holdout.test_size, cfg.holdout.seed)
    return X_test, y_test, digest


def rescore(cfg: DictConfig, gate, name: str, versions: dict) -> tuple[dict, list[str]]:
    """Metrics of each version on the fixed holdout; notes say which may have trained on it."""
    from gymchurn.churn.evaluate import classification_metrics  # scikit-learn: seconds to import

    X, y, digest = fixed_holdout(cfg)
    # The key this holdout would have in a version's tags, had it been evaluated on it.
    key = (digest, str(cfg.holdout.seed), str(cfg.holdout.test_size))[:len(gate.same_basis)]
    notes = [f"fixed holdout: {len(X)} customers of data {digest[:12]} "
             f"(split seed {cfg.holdout.seed}, test size {cfg.holdout.test_size})"]
    metrics = {}
    for role, version in versions.items():
        if gate.kind == "classifier":
            pipeline, threshold = load_fitted_pipeline(name, version.version)
            metrics[role] = classification_metrics(y, pipeline.predict_proba(X)[:, 1], threshold)
        else:
            metrics[role] = segmentation_metrics(load_version(name, version.version), X, y,
                                                 version)
        if gate.kind == "classifier" and holdout_of(version, gate.same_basis) != key:
            notes.append(f"v{version.version} was evaluated on another holdout: some of these "
                         "customers may be in its training data")
    return metrics, notes


def segmentation_metrics(model, X: pd.DataFrame, y: pd.Series, version) -> dict[str, float]:
    """A version's segments measured on the fixed holdout: the churn range between its safest
    and riskiest segment and the distinct column groups of its least distinct segment, both
    independent of the columns it clusters on; rule fidelity and stability as recorded (they
    need the clusters and refits on resamples, so a fitted model cannot re-measure them)."""
    from gymchurn.segments.model import assign_segments
    from gymchurn.segments.rules import column_groups, distinct_groups

    labels = assign_segments(model, X)["segment"].to_numpy()
    churn = np.asarray(y, dtype=float)
    rates = [churn[labels == s].mean() for s in np.unique(labels)]
    distinct = distinct_groups(X, labels, column_groups(X))
    result = {"churn_range": float(max(rates) - min(rates)) if len(rates) > 1 else float("nan"),
              "distinct_columns_min": float(min(len(c) for c in distinct.values())),
              "n_segments": float(len(rates))}
    for name in ("rule_fidelity_min", "stability_ari_mean"):
        value = recorded_metric(version, name)
        result[name] = float("nan") if value is None else value
    return result


def compare(cfg: DictConfig, gate, name: str, challenger, champion) -> Comparison:
    """Both versions' report metrics on the same holdout (recorded, or re-scored)."""
    versions = {"challenger": challenger, "champion": champion}
    report = list(gate.report)
    recorded = {role: {m: recorded_metric(v, m) for m in report} for role, v in versions.items()}
    basis = [holdout_of(v, gate.same_basis) for v in versions.values()]
    same = basis[0] is not None and basis[0] == basis[1]
    if same and all(recorded[r][gate.metric] is not None for r in recorded):
        shown = ", ".join(f"{k} {str(v)[:12]}" for k, v in zip(gate.same_basis, basis[0], strict=True))
        return Comparison(
            {r: {m: v for m, v in values.items() if v is not None} for r, values in recorded.items()},
            f"same basis ({shown}): recorded metrics",
        )
    metrics, notes = rescore(cfg, gate, name, versions)
    why = f"their {'/'.join(gate.same_basis)} differ" if basis[0] != basis[1] else \
        f"{gate.metric} was not recorded"
    return Comparison(metrics, f"re-scored both on one fixed holdout ({why})", notes)


# ---------------------------------------------------------------- the decision


def better_by(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is (positive = better) in the metric's direction."""
    return champion - challenger if metric in LOWER_IS_BETTER else challenger - champion


def decide(gate, comparison: Comparison | None) -> tuple[bool, str]:
    """(promote?, reason) from the gate's metric, margin and minimums."""
    if comparison is None:
        return True, "no champion yet: the first version to pass becomes champion"
    metric, margin = gate.metric, float(gate.margin)
    new, old = comparison.metrics["challenger"], comparison.metrics["champion"]
    if not np.isfinite(new.get(metric, np.nan)):
        return False, f"the challenger has no {metric}"
    for name, floor in (gate.minimum or {}).items():
        value = new.get(name, float("nan"))
        if not value >= float(floor):
            return False, f"challenger {name} {value:.4f} is below the minimum {floor}"
    if not np.isfinite(old.get(metric, np.nan)):
        return True, f"the champion has no {metric}"
    gain = better_by(metric, new[metric], old[metric])
    verdict = "passes" if gain >= margin else "fails"
    return gain >= margin, (
        f"{metric} challenger {new[metric]:.4f}, champion {old[metric]:.4f}: better by "
        f"{gain:+.4f}, the gate needs {margin:+} ({verdict})"
    )


def comparison_table(comparison: Comparison, challenger, champion) -> pd.DataFrame:
    new, old = comparison.metrics["challenger"], comparison.metrics["champion"]
    names = [m for m in new if m in old]
    return pd.DataFrame({
        "metric": names,
        f"challenger v{challenger.version}": [new[m] for m in names],
        f"champion v{champion.version}": [old[m] for m in names],
        "better by": [better_by(m, new[m], old[m]) for m in names],
    })


# ---------------------------------------------------------------- recording


def who(cfg: DictConfig) -> str:
    """The person deciding: `user=...`, else the login name."""
    if cfg.user:
        return str(cfg.user)
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def record_decision(cfg: DictConfig, name: str, decision: str, candidate, champion, reason: str,
                    comparison: Comparison | None, table: pd.DataFrame | None,
                    before: dict, after: dict, apply=None) -> str:
    """Write the decision as an MLflow run and as `promotion.*` tags on the candidate version.

    `before`/`after`: alias -> version (None: unset) as read under the lock and as decided.
    `apply()` moves the aliases inside the run: if it fails, the run ends FAILED, so a FINISHED
    decision run always matches the aliases it records.
    """
    user = who(cfg)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    run_tags = {
        "model_name": name, "decision": decision, "forced": str(decision == "forced").lower(),
        "user": user, "candidate_version": str(candidate.version),
        "champion_version": str(champion.version) if champion else "none",
        "reason": reason, "basis": comparison.basis if comparison else "no comparison",
        **{f"{moment}.{alias}": "none" if v is None else str(v)  # e.g. after.champion = 3
           for moment, aliases in (("before", before), ("after", after))
           for alias, v in aliases.items()},
    }
    if cfg.reason:
        run_tags["note"] = str(cfg.reason)
    metrics = {} if comparison is None else {
        f"{role}_{m}": v for role, values in comparison.metrics.items()
        for m, v in values.items() if np.isfinite(v)}
    with tracked_run(cfg.tracking, f"{decision}-{name}-v{candidate.version}", run_tags,
                     experiment=str(cfg.record_experiment)) as run:
        record(RunRecord(
            params={"metric": cfg.gates[name].metric, "margin": cfg.gates[name].margin,
                    "action": cfg.action},
            metrics=metrics, tables={} if table is None else {"comparison.csv": table}))
        if apply is not None:
            apply()
    tags = {"decision": decision, "time": when, "by": user, "reason": reason, "run_id": run.run_id,
            "compared_with": f"v{champion.version}" if champion else "none"}
    if cfg.reason:
        tags["note"] = str(cfg.reason)
    if comparison is not None:
        for role, values in comparison.metrics.items():
            for m, v in values.items():
                tags[f"{role}_{m}"] = f"{v:.6f}"
    set_version_tags(name, candidate.version, {f"promotion.{k}": v for k, v in tags.items()},
                     replacing="promotion.")
    return run.run_id


# ---------------------------------------------------------------- actions


def print_table(table: pd.DataFrame, printer) -> None:
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        printer(table.to_string(index=False))


def move_aliases(name: str, after: dict, lock: ModelLock) -> None:
    """Point the aliases at the decided versions (None: remove), if the lock is still this
    process's, and read them back."""
    lock.check()
    for alias, version in after.items():
        set_alias(name, alias, version)
    found = alias_versions(name)
    wrong = {a: v for a, v in after.items() if found.get(a) != (None if v is None else str(v))}
    if wrong:
        shown = ", ".join(f"@{a} is v{found.get(a)}, not v{v}" for a, v in wrong.items())
        raise GymchurnError(
            f"after moving the aliases of {name}, {shown}: something changed them without the "
            "promotion lock (an older gymchurn, the MLflow UI). Check the aliases, then run the "
            "command again.")


def holding_lock(cfg: DictConfig, name: str, printer):
    return model_lock(name, who(cfg), float(cfg.lock.wait_seconds), float(cfg.lock.lease_seconds),
                      printer)


def promote(cfg: DictConfig, printer=print) -> dict:
    """Run the gate (or a forced promotion); return the decision and the aliases after it."""
    name = str(cfg.model_name)
    gate = cfg.gates.get(name)
    registered_model(name)
    if gate is None:
        raise GymchurnError(
            f"no promotion gate for '{name}'. Add one under gates: in conf/promote.yaml "
            f"(configured: {sorted(cfg.gates)})."
        )
    if cfg.force and cfg.version is None:
        raise GymchurnError("force=true needs the version to promote: version=N force=true.")
    resolve_version(name, alias=CHALLENGER, version=cfg.version)  # a bad request fails unlocked
    with holding_lock(cfg, name, printer) as lock:
        return promote_locked(cfg, name, gate, lock, printer)


def promote_locked(cfg: DictConfig, name: str, gate, lock: ModelLock, printer) -> dict:
    """`promote` under the model's lock: every alias read here is fresh."""
    candidate = resolve_version(name, alias=CHALLENGER, version=cfg.version)
    aliases = alias_versions(name)
    champion = resolve_version(name, alias=CHAMPION) if CHAMPION in aliases else None
    which = f"v{candidate.version}" + ("" if cfg.version is not None else " (@challenger)")
    printer(f"promotion gate  {name}: {which} vs "
            f"{f'champion v{champion.version}' if champion else 'no champion'}; "
            f"metric {gate.metric}, margin {gate.margin}")
    if champion is not None and str(champion.version) == str(candidate.version):
        printer(f"decision: nothing to do, v{candidate.version} is already @champion.")
        return {"decision": "unchanged", "aliases": aliases, "run_id": None}

    comparison = table = None
    if champion is not None:
        try:
            comparison = compare(cfg, gate, name, candidate, champion)
        except GymchurnError as err:
            if not cfg.force:
                raise
            printer(f"comparison not possible ({err}); promoting anyway because force=true")
    if comparison is not None:
        table = comparison_table(comparison, candidate, champion)
        printer(f"basis: {comparison.basis}")
        for note in comparison.notes:
            printer(f"       {note}")
        print_table(table, printer)
    passed, reason = decide(gate, comparison) if comparison or champion is None else (False, "")
    if cfg.force:
        decision = "forced"
        reason = f"forced by {who(cfg)}" + (f" (gate: {reason})" if reason else "")
    else:
        decision = "promoted" if passed else "rejected"

    interruption_point()  # Ctrl-C during a long re-scoring stops here, before any write
    before = {PREVIOUS: aliases.get(PREVIOUS), CHAMPION: aliases.get(CHAMPION)}
    after, apply = dict(before), None
    if decision in ("promoted", "forced"):
        after = {PREVIOUS: str(champion.version) if champion else before[PREVIOUS],
                 CHAMPION: str(candidate.version)}

        def apply():
            hand_over(name, after, lock, champion, candidate)

        done = f"@champion -> v{candidate.version}" + (
            f", @previous-champion -> v{champion.version} (undo: make rollback)" if champion else "")
    else:
        done = f"@champion stays at v{champion.version}"
    run_id = record_decision(cfg, name, decision, candidate, champion, reason, comparison, table,
                             before, after, apply)
    printer(f"decision: {decision.upper()}: {reason}. {done}")
    printer(f"recorded: promotion.* tags on v{candidate.version}; run {run_id} in experiment "
            f"'{cfg.record_experiment}'")
    return {"decision": decision, "reason": reason, "run_id": run_id, "aliases": alias_versions(name),
            "comparison": comparison}


def hand_over(name: str, after: dict, lock, replaced, by) -> None:
    """Move the aliases to `after`; the replaced champion's record says which version took
    over (its other promotion.* tags stay: they describe how it became champion)."""
    move_aliases(name, after, lock)
    if replaced is not None:
        set_version_tags(name, replaced.version, {"promotion.replaced_by": f"v{by.version}"})


def rollback(cfg: DictConfig, printer=print) -> dict:
    """@champion back to @previous-champion; the replaced champion becomes @previous-champion,
    so a second rollback undoes the first."""
    name = str(cfg.model_name)
    if cfg.gates.get(name) is None:
        raise GymchurnError(f"no promotion gate for '{name}' in conf/promote.yaml.")
    registered_model(name)
    with holding_lock(cfg, name, printer) as lock:
        aliases = alias_versions(name)  # fresh, under the lock
        if PREVIOUS not in aliases:
            raise GymchurnError(
                f"'{name}' has no @{PREVIOUS}: there is nothing to roll back to. Aliases: "
                f"{', '.join(f'@{a} -> v{v}' for a, v in sorted(aliases.items())) or 'none'}. "
                "Use `make promote version=N force=true` instead."
            )
        previous = resolve_version(name, alias=PREVIOUS)
        champion = resolve_version(name, alias=CHAMPION) if CHAMPION in aliases else None
        reason = f"rollback to v{previous.version}" + (
            f" from v{champion.version}" if champion else "")
        before = {PREVIOUS: aliases.get(PREVIOUS), CHAMPION: aliases.get(CHAMPION)}
        after = {PREVIOUS: str(champion.version) if champion else None,
                 CHAMPION: str(previous.version)}
        run_id = record_decision(cfg, name, "rollback", previous, champion, reason, None, None,
                                 before, after, lambda: hand_over(name, after, lock, champion,
                                                                  previous))
    printer(f"decision: ROLLBACK: @champion -> v{previous.version}"
            + (f", @previous-champion -> v{champion.version}" if champion else ""))
    printer(f"recorded: run {run_id} in experiment '{cfg.record_experiment}'")
    return {"decision": "rollback", "run_id": run_id, "aliases": alias_versions(name)}
