"""The monitoring report's sections (gymchurn.reporting's blocks and renderer): page one says
the verdict and why in plain words; then data drift, prediction drift, realised performance; the
appendix holds the rules and the method. Every sentence is a rule applied to `MonthResult`."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from gymchurn.monitoring.month import MonthResult
from gymchurn.monitoring.verdict import OUTCOME_RULES, RULES
from gymchurn.reporting.blocks import Section, frame_of, pct

ADVICE = {
    "ok": "Keep using the model: nothing it relies on moved past the thresholds{outcomes}.",
    "watch": "Keep using the model and look into the reasons below; check again next month{later}.",
    "retrain": "Retrain: the model no longer matches this month (reasons below). Its ranking can "
               "still guide this month's calls, but retrain it on recent data with outcomes "
               "(`make experiment`) and promote the new version only if it beats the champion "
               "(`make promote`).",
}
METRIC_WORDS = {"roc_auc": "ROC AUC (ranking)", "precision": "precision at the threshold",
                "recall": "recall at the threshold",
                "capture": "share of the leavers within the top {capacity} by risk",
                "churn_rate": "churn rate", "predicted_rate": "mean predicted churn"}


def calls_within(capacity: float, n: int) -> int:
    """How many of `n` customers calls to the top `capacity` reach (as many as
    performance.weighted_metrics counts)."""
    return int(capacity * n + 1e-9)


def reachable_share(n: int, leavers: int, capacity: float) -> float:
    """The largest share of the leavers that calls to the top `capacity` of `n` can reach."""
    return min(1.0, calls_within(capacity, n) / leavers) if leavers else 1.0


def feature_name(feature: str, labels: Mapping) -> str:
    label = labels.get(feature)
    return f"{feature} ({label})" if label and label.lower() != feature.lower() else feature


def summary(r: MonthResult, capacity: float) -> Section:
    s = Section("summary", "What to do, and why")
    later = "" if r.has_outcomes else ", with the outcomes (the Churn column) once they are known"
    outcomes = " and it ranked this month's leavers as well as on its holdout" if r.has_outcomes else ""
    s.say(ADVICE[r.verdict].format(later=later, outcomes=outcomes))
    for f in r.findings:
        s.say(f"**{f.verdict}** ({f.rule}): {f.reason}.")
    lv = r.leavers
    s.say(f"This month: {r.n:,} customers; {pct(r.flagged['now'])} flagged at risk "
          f"({pct(r.flagged['then'])} on the holdout); {lv['expected']:,.0f} ± "
          f"{1.96 * lv['sd']:,.0f} leavers expected from the probabilities.")
    drifted = r.features[r.features["status"] != "ok"]
    if drifted.empty:
        s.say("No feature moved past the drift thresholds.")
    else:
        s.say("Features that moved: " + ", ".join(
            f"{x.feature} ({x.status}, PSI {x.psi:.2f})" for x in drifted.itertuples()) + ".")
    if r.has_outcomes:
        auc, cap = r.performance.loc["roc_auc"], r.performance.loc["capture"]
        s.say(f"Outcomes: {lv['observed']:,} customers left. ROC AUC {auc['value']:.3f} "
              f"(holdout {auc['holdout']:.3f}; a month like this shows {auc['expected_low']:.3f}"
              f"–{auc['expected_high']:.3f}); calling the top {pct(capacity)} by risk would have "
              f"reached {pct(cap['value'])} of the leavers, where a month like this shows "
              f"{pct(cap['expected_low'])}–{pct(cap['expected_high'])} (at most "
              f"{pct(reachable_share(r.n, lv['observed'], capacity))} with this many leavers).")
    else:
        s.say("Outcomes are not in this file: when they are known, run `make monitor` on the "
              "table with its Churn column to measure how the model actually did.")
    s.numbers = {"customers": r.n, "flagged_share": r.flagged["now"],
                 "expected_leavers": lv["expected"], "rules_fired": len(r.findings)}
    return s


def drift_section(r: MonthResult, labels: Mapping) -> Section:
    s = Section("drift", "Data drift: does this month look like the training data?")
    counts = r.features["status"].value_counts()
    s.say(f"Of {len(r.features)} features, {counts.get('drift', 0)} drifted and "
          f"{counts.get('watch', 0)} are to watch. A feature drifts when its population "
          "stability index (PSI) passes the drift mark and its test says the move is more than "
          "a month of this size shows by chance.")
    rows = []
    for x in r.features.itertuples():
        if x.kind == "categorical":
            moved = f"share of {x.value}: {pct(x.then)} → {pct(x.now)}"
            wasserstein = "–"
        else:
            moved = f"mean {x.then:.2f} → {x.now:.2f}"
            wasserstein = f"{x.wasserstein:.3f}"
        rows.append({"feature": feature_name(x.feature, labels), "status": x.status,
                     "importance rank": x.importance_rank, "PSI": f"{x.psi:.3f}",
                     "test": x.test, "p-value": f"{x.p_value:.2g}",
                     "Wasserstein (SD)": wasserstein, "outside training range": pct(x.out_of_range),
                     "what moved": moved})
    s.table("Per feature, the most drifted first (importance rank: 1 = matters most to the model).",
            frame_of(rows))
    s.figure("feature_drift", "Population stability index per feature; dashed: the watch and "
             "drift marks.", r.figures["feature_drift"])
    s.files["feature_drift.csv"] = r.features
    return s


def prediction_section(r: MonthResult) -> Section:
    s = Section("predictions", "Prediction drift: whom the model calls at risk")
    sc = r.scores
    s.say(f"Mean churn probability {sc['now']:.3f} this month against {sc['then']:.3f} on the "
          f"holdout (PSI {sc['psi']:.3f}, Kolmogorov-Smirnov p = {sc['p_value']:.2g}: "
          f"{sc['status']}). Flagged at risk: {pct(r.flagged['now'])} against "
          f"{pct(r.flagged['then'])}.")
    s.say(f"Expected leavers this month: {r.leavers['expected']:,.0f} (± {1.96 * r.leavers['sd']:,.0f}"
          ", 95 %, if the probabilities are right).")
    s.figure("scores", "Churn probabilities this month (line) and on the holdout (bars).",
             r.figures["scores"])
    s.table("Risk bands (conf/risk_bands/): share of customers.",
            frame_of(r.bands.to_dict("records"), {"then": "pct", "now": "pct"})
            .rename(columns={"then": "holdout", "now": "this month"}))
    if r.segments is None:
        s.say("Segment mix: no segmentation model is registered (or segmentation.enabled=false).")
    else:
        table = r.segments.copy()
        table["then"] = ["–" if pd.isna(v) else pct(v) for v in table["then"]]
        table["now"] = [pct(v) for v in table["now"]]
        caption = "Segment mix: share of customers per segment, when fitted and this month."
        if r.segment_mix:
            caption += f" PSI {r.segment_mix['psi']:.3f}, chi-square p = {r.segment_mix['p_value']:.2g}."
        else:
            caption += " The segmentation version has no reference shares (logged before monitoring)."
        s.table(caption, table.rename(columns={"then": "when fitted", "now": "this month"}))
    return s


def performance_section(r: MonthResult, capacity: float, level: float) -> Section:
    s = Section("performance", "Realised performance: how the model did once outcomes were in")
    if not r.has_outcomes:
        s.say("This file has no Churn column, so the model's realised performance cannot be "
              "measured yet.")
        return s
    s.say(f"Each figure with its {pct(level)} bootstrap interval, against the holdout's and the "
          f"range a month of {r.n:,} customers with {r.leavers['observed']:,} leavers shows when "
          "the model performs as on its holdout (the holdout's leavers and stayers resampled to "
          "this month's numbers): a value below that range is a decay, not noise.")
    rows = []
    for metric, x in r.performance.iterrows():
        rows.append({"metric": METRIC_WORDS[metric].format(capacity=pct(capacity)),
                     "this month": f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]",
                     "holdout": f"{x['holdout']:.3f}",
                     "expected for this month": "given" if pd.isna(x["expected_low"])
                     else f"{x['expected_low']:.3f} – {x['expected_high']:.3f}"})
    s.table("Realised against expected.", frame_of(rows))
    s.figure("calibration", "Observed against predicted churn per risk decile.",
             r.figures["calibration"])
    s.table("Calibration by risk decile.", frame_of(
        r.calibration.to_dict("records"),
        {"predicted": ".3f", "observed": ".3f", "observed_low": ".3f", "observed_high": ".3f"}))
    return s


def rules_section(r: MonthResult, rules: Mapping[str, Mapping]) -> Section:
    s = Section("rules", "The rules (conf/monitor.yaml)", appendix=True)
    fired = {f.rule for f in r.findings}
    rows = []
    for name, rule in rules.items():
        thresholds = ", ".join(f"{k} {rule[k]}" for k in RULES[name][1])
        state = ("off" if rule["verdict"] == "off" else "fired" if name in fired else
                 "needs outcomes" if name in OUTCOME_RULES and not r.has_outcomes else "did not fire")
        rows.append({"rule": name, "verdict when it fires": rule["verdict"],
                     "thresholds": thresholds or "–", "this month": state})
    s.table("The verdict is the most severe verdict of the rules that fired; ok when none did.",
            frame_of(rows))
    return s


def method_section(drift: Mapping, bootstrap: Mapping) -> Section:
    s = Section("method", "Method", appendix=True)
    s.say("The baseline is the model's own reference statistics, logged with the registered "
          "version at training time: per feature the training split's decile bins and a 501-point "
          "quantile sketch (or the counts of a listed-values column), and the holdout's "
          "probabilities and outcomes. The training file is never read.")
    s.say(f"PSI over the training deciles: watch from {drift['psi_watch']}, drift from "
          f"{drift['psi_drift']}, each only when the test's p-value is below {drift['alpha']} "
          "(Kolmogorov-Smirnov for numeric columns, chi-square for listed values). The "
          "Wasserstein distance is in training standard deviations. A feature is also to watch "
          f"when {pct(float(drift['out_of_range_watch']))} of its values lie outside what training saw.")
    s.say(f"Intervals: {int(bootstrap['replicates'])} bootstrap resamples of the month (Poisson "
          f"weights) and {int(bootstrap['replicates'])} resamples of the holdout at the month's "
          "size, with a fixed seed: the same file and config give the same report.")
    return s


def calls_section(calls: pd.DataFrame, threshold: float, capacity: float, show: int,
                  has_outcomes: bool, version: str) -> Section:
    """Whom to call this month (gymchurn.reporting.call_list on the month's scores): the
    customers still members, riskiest first, and how far down the department's capacity goes."""
    from gymchurn.reporting.call_list import who_to_call

    calls_possible = calls_within(capacity, len(calls))
    note = (f"Calling {pct(capacity)} of them (`capacity` in conf/monitor.yaml) is the first "
            f"{calls_possible:,} on the list"
            + (f", {int(calls['at_risk'].head(calls_possible).sum()):,} of them at risk."
               if calls_possible else "."))
    whose = ("who stayed this month (Churn = 0: still members)" if has_outcomes
             else "of this month's table")
    section = who_to_call(calls, threshold, note, show, whose=whose,
                          scores=f"The probabilities are the judged model's ({version}).")
    section.title = "Whom to call this month"
    section.numbers["calls_possible"] = calls_possible
    return section


def build_sections(r: MonthResult, cfg: Mapping, labels: Mapping,
                   calls: Section | None = None) -> list[Section]:
    """The report's sections; `calls` (calls_section) goes right after page one."""
    capacity, level = float(cfg["capacity"]), float(cfg["bootstrap"]["level"])
    return [summary(r, capacity), *([calls] if calls else []), drift_section(r, labels),
            prediction_section(r), performance_section(r, capacity, level),
            rules_section(r, cfg["rules"]), method_section(cfg["drift"], cfg["bootstrap"])]
