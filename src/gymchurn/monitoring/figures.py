"""The monitoring report's figures, as matplotlib objects (gymchurn.plots' backend)."""

from __future__ import annotations

import numpy as np

from gymchurn.monitoring.drift import DriftThresholds
from gymchurn.plots import plt

STATUS_COLOURS = {"ok": "#4c72b0", "watch": "#e0a030", "drift": "#dd5555"}


def feature_psi_figure(features, limits: DriftThresholds) -> plt.Figure:
    data = features.sort_values("psi")
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(data) + 1.3))
    ax.barh(data["feature"], data["psi"], color=[STATUS_COLOURS[s] for s in data["status"]])
    for x, label in ((limits.psi_watch, "watch"), (limits.psi_drift, "drift")):
        ax.axvline(x, color="#777", linestyle="--", linewidth=0.8)
        ax.text(x, len(data) - 0.4, f" {label}", color="#555", fontsize=8, va="bottom")
    ax.set_xlabel("population stability index against the training split")
    ax.set_title("Feature drift (colour: status)")
    fig.tight_layout()
    return fig


def score_figure(probability: np.ndarray, holdout: np.ndarray, threshold: float) -> plt.Figure:
    bins = np.linspace(0, 1, 41)
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.hist(holdout, bins=bins, density=True, alpha=0.55, color="#4c72b0",
            label=f"holdout ({len(holdout):,} customers)")
    ax.hist(probability, bins=bins, density=True, histtype="step", linewidth=1.6,
            color="#dd5555", label=f"this month ({len(probability):,})")
    ax.axvline(threshold, color="#333", linestyle="--", linewidth=0.9)
    ax.text(threshold, ax.get_ylim()[1] * 0.92, f" flagged from {threshold:.2f}", fontsize=8)
    ax.set_xlabel("churn probability")
    ax.set_ylabel("density")
    ax.set_title("Churn probabilities: this month against the holdout")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def calibration_figure(calibration) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="predicted = observed")
    err = [calibration["observed"] - calibration["observed_low"],
           calibration["observed_high"] - calibration["observed"]]
    ax.errorbar(calibration["predicted"], calibration["observed"], yerr=err, fmt="o",
                color="#dd5555", capsize=3, label="risk decile (95 % interval)")
    ax.set_xlabel("mean predicted churn")
    ax.set_ylabel("observed churn")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration by risk decile")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def month_figures(result, holdout: np.ndarray, threshold: float,
                  limits: DriftThresholds) -> dict[str, plt.Figure]:
    figures = {"feature_drift": feature_psi_figure(result.features, limits),
               "scores": score_figure(result.probability, holdout, threshold)}
    if result.calibration is not None:
        figures["calibration"] = calibration_figure(result.calibration)
    return figures
