"""Plots: each function returns a matplotlib Figure, so callers log, embed or save it."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # no screen on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)


def classifier_figures(y_true, proba, threshold: float, label: str) -> dict[str, plt.Figure]:
    """ROC, precision-recall, confusion matrix (at `threshold`) and calibration curve."""
    figures = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y_true, proba, name=label, ax=ax, plot_chance_level=True)
    ax.set_title("ROC curve (holdout)")
    figures["roc_curve"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(
        y_true, proba, name=label, ax=ax, plot_chance_level=True
    )
    ax.set_title("Precision-recall curve (holdout)")
    figures["pr_curve"] = fig

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        y_true, (np.asarray(proba) >= threshold).astype(int),
        display_labels=["stays", "churns"], ax=ax, colorbar=False,
    )
    ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    figures["confusion_matrix"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y_true, proba, n_bins=10, name=label, ax=ax)
    ax.set_title("Calibration (holdout)")
    figures["calibration_curve"] = fig
    return figures


def importance_figure(importance: pd.DataFrame, title: str,
                      xlabel: str = "drop in holdout ROC AUC when the column is shuffled") -> plt.Figure:
    """Horizontal bars of `importance_mean` with `importance_std` error bars, largest on top."""
    data = importance.sort_values("importance_mean")
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(data) + 1.2))
    ax.barh(data["feature"], data["importance_mean"], xerr=data["importance_std"], color="#4c72b0")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def optuna_figures(study) -> dict[str, plt.Figure]:
    """Optimisation history and hyperparameter importances (skipped when too few trials)."""
    import optuna
    from optuna.visualization import matplotlib as optuna_mpl

    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        ax = optuna_mpl.plot_optimization_history(study)
        figures["optuna_history"] = ax.figure
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) >= 2 and len(study.best_params) >= 1:
            try:
                ax = optuna_mpl.plot_param_importances(study)
                figures["optuna_param_importances"] = ax.figure
            except (RuntimeError, ValueError, ZeroDivisionError):
                pass  # importances need variation across complete trials
    for fig in figures.values():
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
    return figures
