"""The verdict on a month: `ok`, `watch` or `retrain`, from the rules of conf/monitor.yaml.

Each rule there names a check below, the verdict it gives when it fires (watch | retrain | off)
and its own thresholds; the month's verdict is the most severe verdict of the rules that fired,
`ok` when none did, and every fired rule says why in one sentence with its numbers. Rules that
need outcomes (the realised-performance ones) do not apply to a month without a Churn column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from gymchurn.errors import GymchurnError
from gymchurn.monitoring.drift import DriftThresholds

VERDICTS = ("ok", "watch", "retrain")
RULE_VERDICTS = ("watch", "retrain", "off")
PERFORMANCE_WORDS = {"roc_auc": "ROC AUC", "recall": "recall at the threshold",
                     "capture": "share of the leavers within the calling capacity"}


@dataclass
class Facts:
    """What the month showed, as the rules read it."""

    n: int
    features: pd.DataFrame               # gymchurn.monitoring.drift.feature_drift
    scores: dict                         # drift.score_drift of the churn probabilities
    expected_leavers: float
    expected_leavers_sd: float
    limits: DriftThresholds              # conf/monitor.yaml drift: (alpha, out_of_range_watch)
    performance: pd.DataFrame | None = None   # performance.realised_performance, with outcomes
    observed_leavers: int | None = None
    segment_mix: dict | None = None      # {"psi", "p_value"} when the segmentation has a reference


@dataclass
class Finding:
    rule: str
    verdict: str
    reason: str


def _below_expected(metric: str) -> Callable[[Facts, Mapping], str | None]:
    def check(f: Facts, rule: Mapping) -> str | None:
        if f.performance is None:
            return None
        row = f.performance.loc[metric]
        if row["value"] >= row["expected_low"] - float(rule["margin"]):
            return None
        return (f"realised {PERFORMANCE_WORDS[metric]} {row['value']:.3f} is below "
                f"{row['expected_low']:.3f}, the low end of what a month of {f.n:,} customers "
                f"with as many leavers shows when the model performs as on its holdout "
                f"({row['holdout']:.3f}), by more than {float(rule['margin']):g}")
    return check


def _leavers_off(f: Facts, rule: Mapping) -> str | None:
    if f.observed_leavers is None or f.expected_leavers <= 0:
        return None
    gap = f.observed_leavers - f.expected_leavers
    z = gap / f.expected_leavers_sd if f.expected_leavers_sd > 0 else float("inf")
    if abs(z) < float(rule["z"]) or abs(gap) / f.expected_leavers < float(rule["margin"]):
        return None
    return (f"{f.observed_leavers:,} customers left against {f.expected_leavers:,.0f} expected "
            f"from the probabilities ({gap / f.expected_leavers:+.0%}, {z:+.1f} standard "
            "deviations): the probabilities no longer match what happens")


def _drifted(f: Facts, top: int | None = None) -> pd.DataFrame:
    table = f.features[f.features["status"] == "drift"]
    return table if top is None else table[table["importance_rank"] <= top]


def _describe(table: pd.DataFrame) -> str:
    return ", ".join(f"{r.feature} (PSI {r.psi:.2f})" for r in table.itertuples())


def _important_feature_drift(f: Facts, rule: Mapping) -> str | None:
    top = int(rule["top"])
    drifted = _drifted(f, top)
    if len(drifted) < int(rule["count"]):
        return None
    return (f"{len(drifted)} of the model's {top} most important features drifted: "
            f"{_describe(drifted)}")


def _feature_drift(f: Facts, rule: Mapping) -> str | None:
    drifted = _drifted(f)
    if len(drifted) < int(rule["count"]):
        return None
    return f"{len(drifted)} feature(s) drifted: {_describe(drifted)}"


def _score_drift(f: Facts, rule: Mapping) -> str | None:
    s = f.scores
    if s["status"] != "drift":
        return None
    return (f"the churn probabilities moved (PSI {s['psi']:.2f}): mean {s['then']:.3f} on the "
            f"holdout, {s['now']:.3f} now")


def _out_of_range(f: Facts, rule: Mapping) -> str | None:
    outside = f.features[f.features["out_of_range"] >= f.limits.out_of_range_watch]
    if outside.empty:
        return None
    return ("values training never saw: " + ", ".join(
        f"{r.feature} {r.out_of_range:.1%}" for r in outside.itertuples()))


def _segment_mix(f: Facts, rule: Mapping) -> str | None:
    mix = f.segment_mix
    if not mix or mix["psi"] < float(rule["psi"]) or mix["p_value"] >= f.limits.alpha:
        return None
    return f"the segment mix moved (PSI {mix['psi']:.2f})"


# name -> (check, the thresholds it reads from its conf/monitor.yaml entry)
RULES: dict[str, tuple[Callable[[Facts, Mapping], str | None], tuple[str, ...]]] = {
    "realised_auc_below_expected": (_below_expected("roc_auc"), ("margin",)),
    "capture_below_expected": (_below_expected("capture"), ("margin",)),
    "recall_below_expected": (_below_expected("recall"), ("margin",)),
    "leavers_off_prediction": (_leavers_off, ("margin", "z")),
    "important_feature_drift": (_important_feature_drift, ("top", "count")),
    "feature_drift": (_feature_drift, ("count",)),
    "score_drift": (_score_drift, ()),
    "out_of_range": (_out_of_range, ()),
    "segment_mix_shift": (_segment_mix, ("psi",)),
}


# The rules that read the month's outcomes: they cannot fire on a month without Churn.
OUTCOME_RULES = {"realised_auc_below_expected", "capture_below_expected", "recall_below_expected",
                 "leavers_off_prediction"}


def check_rules(rules: Mapping[str, Mapping]) -> None:
    """Refuse, before any work, a rule the code does not know, a verdict that is not one, or a
    missing or non-numeric threshold."""
    for name, rule in rules.items():
        if name not in RULES:
            raise GymchurnError(f"monitor rule '{name}' is unknown: conf/monitor.yaml's rules are "
                                f"{', '.join(RULES)}.")
        if not isinstance(rule, Mapping) or rule.get("verdict") not in RULE_VERDICTS:
            raise GymchurnError(f"rules.{name}.verdict must be one of {', '.join(RULE_VERDICTS)}.")
        for key in RULES[name][1]:
            value = rule.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise GymchurnError(f"rules.{name}.{key} must be a number of at least 0, got "
                                    f"{value!r}.")


def judge(facts: Facts, rules: Mapping[str, Mapping]) -> tuple[str, list[Finding]]:
    """(verdict, the rules that fired, most severe first)."""
    findings = []
    for name, rule in rules.items():
        if rule["verdict"] == "off":
            continue
        reason = RULES[name][0](facts, rule)
        if reason:
            findings.append(Finding(name, rule["verdict"], reason))
    findings.sort(key=lambda f: -VERDICTS.index(f.verdict))
    return (findings[0].verdict if findings else "ok"), findings
