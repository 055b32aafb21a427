"""Appendix, how well the model predicts: the champion's holdout metrics beside each family's
best run, curves, the threshold in customers per 1,000, calibration in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gymchurn.churn.evaluate import classification_metrics
from gymchurn.plots import classifier_figures
from gymchurn.reporting.blocks import Section, frame_of, pct

METRIC_COLUMNS = ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss"]


def model_performance(pipeline, threshold: float, X_test: pd.DataFrame, y_test: pd.Series,
                      all_proba: np.ndarray, champion: str, holdout_note: str,
                      families: pd.DataFrame | None) -> Section:
    """Holdout metrics of the champion (computed here), the other families' best runs (from
    MLflow, passed in as `families`), curves, the threshold in customers per 1,000 (of the
    holdout, and of the whole table, whose probabilities are `all_proba`)."""
    section = Section("model", "How well the model predicts")
    proba = pipeline.predict_proba(X_test)[:, 1]
    metrics = classification_metrics(y_test, proba, threshold)
    section.numbers.update({f"test_{k}": v for k, v in metrics.items()}, threshold=threshold)
    section.say(f"The churn model is {champion}. {holdout_note}")
    section.say(
        f"On {len(y_test):,} holdout customers it ranks a random leaver above a random stayer "
        f"{pct(metrics['roc_auc'])} of the time (ROC AUC {metrics['roc_auc']:.3f}); at its "
        f"decision threshold it is right about {pct(metrics['accuracy'])} of customers, "
        f"finds {pct(metrics['recall'])} of those who leave (recall), and "
        f"{pct(metrics['precision'])} of the customers it flags do leave (precision)."
    )
    rows = [{"model": f"champion: {champion}", **{m: metrics[m] for m in METRIC_COLUMNS}}]
    if families is not None and len(families):
        for r in families.itertuples(index=False):
            rows.append({"model": f"best {r.family} / {r.features} (MLflow run {r.run_id[:8]})",
                         **{m: getattr(r, f"test_{m}") for m in METRIC_COLUMNS}})
    section.table("Holdout metrics: the champion (re-computed now) and each family's best run "
                  "(chosen by cross-validation; figures as logged in MLflow).",
                  frame_of(rows, {m: ".4f" for m in METRIC_COLUMNS}))
    figures = classifier_figures(y_test, proba, threshold, "champion")
    captions = {"roc_curve": "ROC curve on the holdout.",
                "pr_curve": "Precision-recall curve on the holdout.",
                "confusion_matrix": "Holdout customers by prediction and outcome at the threshold.",
                "calibration_curve": "Calibration: predicted probability against observed churn."}
    for name, fig in figures.items():
        section.figure(name, captions.get(name, name), fig)

    per_1000 = 1000 * float((all_proba >= threshold).mean())
    per_1000_holdout = 1000 * float((proba >= threshold).mean())
    section.numbers.update(flagged_per_1000=per_1000, flagged_per_1000_holdout=per_1000_holdout,
                           mean_predicted=float(proba.mean()), observed_rate=float(y_test.mean()))
    section.say(
        f"The decision threshold is {threshold:.3f} (chosen on out-of-fold predictions of the "
        f"training split, never on the holdout). It flags {per_1000_holdout:.0f} of every 1,000 "
        f"holdout customers ({per_1000:.0f} per 1,000 across the whole table); of 1,000 flagged, "
        f"about {1000 * metrics['precision']:.0f} would leave without action, and of 1,000 leavers "
        f"about {1000 * metrics['recall']:.0f} are among the flagged."
    )
    # Rule: probabilities are "well calibrated" when the holdout's mean prediction is within
    # 2 points of its observed churn rate and the Brier score is below 0.1.
    gap = abs(proba.mean() - y_test.mean())
    if gap <= 0.02 and metrics["brier"] < 0.1:
        section.say(f"The probabilities can be read as chances: on the holdout the mean prediction is "
                    f"{pct(proba.mean())} against {pct(y_test.mean())} observed (Brier score "
                    f"{metrics['brier']:.3f}).")
    else:
        section.say(f"Read the probabilities as a ranking rather than exact chances: the mean "
                    f"prediction is {pct(proba.mean())} against {pct(y_test.mean())} observed "
                    f"(Brier score {metrics['brier']:.3f}).")

    return section
