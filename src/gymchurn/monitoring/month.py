"""The monitoring core: one month of customers against the model that scores it.

Plain inputs (the fitted pipeline, its reference statistics, the validated month, its outcomes
when known, its segments when a segmentation is registered) -> a plain `MonthResult`: the
feature drift table, the prediction drift (probabilities, flagged share, risk bands, segment
mix, expected leavers), the realised performance and calibration when `Churn` is there, the
verdict and the rules that fired, the figures and the flat metrics a run logs. No MLflow here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gymchurn.monitoring.drift import DriftThresholds, feature_drift, psi, score_drift
from gymchurn.monitoring.performance import (
    calibration_by_decile,
    expected_leavers,
    realised_performance,
)
from gymchurn.monitoring.reference import continuous_reference
from gymchurn.monitoring.verdict import Facts, Finding, judge


@dataclass
class MonthResult:
    name: str
    n: int
    verdict: str
    findings: list[Finding]
    features: pd.DataFrame
    scores: dict
    flagged: dict                       # {"then", "now"} shares at the model's threshold
    bands: pd.DataFrame                 # band, then, now
    segments: pd.DataFrame | None       # segment, name, then, now (then: NaN without reference)
    segment_mix: dict | None
    leavers: dict                       # expected, sd, observed (None before outcomes)
    performance: pd.DataFrame | None
    calibration: pd.DataFrame | None
    probability: np.ndarray
    figures: dict = field(default_factory=dict)

    @property
    def has_outcomes(self) -> bool:
        return self.performance is not None

    def metrics(self) -> dict[str, float]:
        """Flat numbers for the MLflow run: per-feature drift, prediction drift, performance."""
        out = {"customers": self.n, "verdict_level": ["ok", "watch", "retrain"].index(self.verdict),
               "rules_fired": len(self.findings), "flagged_share": self.flagged["now"],
               "expected_leavers": self.leavers["expected"],
               "score_psi": self.scores["psi"], "score_ks_p_value": self.scores["p_value"],
               "features_drifted": int((self.features["status"] == "drift").sum()),
               "features_watch": int((self.features["status"] == "watch").sum())}
        for r in self.features.itertuples():
            for key in ("psi", "p_value", "out_of_range"):
                out[f"drift.{r.feature}.{key}"] = getattr(r, key)
            if r.kind == "continuous":
                out[f"drift.{r.feature}.wasserstein"] = r.wasserstein
        if self.segment_mix:
            out["segment_mix_psi"] = self.segment_mix["psi"]
        if self.performance is not None:
            out["observed_leavers"] = self.leavers["observed"]
            for metric, row in self.performance.iterrows():
                out[f"realised_{metric}"] = row["value"]
                out[f"expected_{metric}_low"] = row["expected_low"]
        return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def band_table(probability: np.ndarray, reference: np.ndarray, labels: list[str],
               cuts: np.ndarray) -> pd.DataFrame:
    from gymchurn.churn.score import band_index

    def shares(p):
        return np.bincount(band_index(p, cuts), minlength=len(labels)) / len(p)

    return pd.DataFrame({"band": labels, "then": shares(reference), "now": shares(probability)})


def segment_table(segments: pd.DataFrame | None,
                  reference: Mapping | None) -> tuple[pd.DataFrame | None, dict | None]:
    """Each segment's share now and in the data the segmentation was fitted on; the mix's PSI
    and chi-square p-value when the segmentation logged its shares."""
    if segments is None:
        return None, None
    now = segments.groupby(["segment", "segment_name"]).size() / len(segments)
    table = now.rename("now").reset_index()
    if not reference:
        table["then"] = np.nan
        return table[["segment", "segment_name", "then", "now"]], None
    from scipy.stats import chi2_contingency

    then = pd.Series({int(k): v for k, v in reference["shares"].items()})
    ids = sorted(set(then.index) | set(table["segment"]))
    now_by_id = table.set_index("segment")["now"].reindex(ids, fill_value=0.0)
    then = then.reindex(ids, fill_value=0.0)
    table = (pd.DataFrame({"segment": ids, "then": then.to_numpy(), "now": now_by_id.to_numpy()})
             .merge(segments.drop_duplicates("segment")[["segment", "segment_name"]], how="left"))
    counts = np.vstack([then.to_numpy() * reference["n"], now_by_id.to_numpy() * len(segments)])
    counts = counts[:, counts.sum(axis=0) > 0]
    p = float(chi2_contingency(counts, correction=False).pvalue) if counts.shape[1] > 1 else 1.0
    mix = {"psi": psi(then.to_numpy(), now_by_id.to_numpy()), "p_value": p}
    return table[["segment", "segment_name", "then", "now"]], mix


def judge_month(name: str, pipeline, reference: Mapping, X: pd.DataFrame,
                churn: pd.Series | None, settings: Mapping, risk_bands: Mapping,
                segments: pd.DataFrame | None = None,
                segment_reference: Mapping | None = None) -> MonthResult:
    """Everything monitoring says about one month. `settings`: conf/monitor.yaml's drift,
    rules, capacity, bootstrap, seed and calibration_deciles."""
    from gymchurn.churn.score import band_cuts
    from gymchurn.monitoring.figures import month_figures

    limits = DriftThresholds.from_config(settings["drift"])
    threshold = float(reference["threshold"])
    columns = list(reference["features"])
    probability = pipeline.predict_proba(X[columns])[:, 1]
    holdout_p = np.asarray(reference["holdout"]["probability"], dtype=float)
    holdout_y = np.asarray(reference["holdout"]["churn"], dtype=int)

    features = feature_drift(reference["features"], X, limits, reference.get("importance"))
    scores = score_drift(continuous_reference(holdout_p), probability, limits)
    flagged = {"then": float((holdout_p >= threshold).mean()),
               "now": float((probability >= threshold).mean())}
    labels, cuts = band_cuts(risk_bands, threshold)
    bands = band_table(probability, holdout_p, labels, cuts)
    seg_table, mix = segment_table(segments, segment_reference)
    expected, sd = expected_leavers(probability)
    leavers = {"expected": expected, "sd": sd, "observed": None}

    performance = calibration = None
    if churn is not None:
        y = churn.to_numpy().astype(int)
        leavers["observed"] = int(y.sum())
        boot = settings["bootstrap"]
        performance = realised_performance(probability, y, holdout_p, holdout_y, threshold,
                                           float(settings["capacity"]), int(boot["replicates"]),
                                           int(settings["seed"]), float(boot["level"]))
        calibration = calibration_by_decile(probability, y, int(settings["calibration_deciles"]))

    facts = Facts(len(X), features, scores, expected, sd, limits, performance, leavers["observed"],
                  mix)
    verdict, findings = judge(facts, settings["rules"])
    result = MonthResult(name, len(X), verdict, findings, features, scores, flagged, bands,
                         seg_table, mix, leavers, performance, calibration, probability)
    result.figures = month_figures(result, holdout_p, threshold, limits)
    return result
