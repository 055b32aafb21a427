"""Caveats an analyst would raise, each measured: the model's quality without this month's
visits (they may overlap the churn definition), self-selection into long contracts, one
snapshot in time, and calibration by risk decile (out-of-fold).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gymchurn.reporting.blocks import Section, frame_of


def without_column_auc(pipeline, customers: pd.DataFrame, features: list[str], target: str,
                       fold: np.ndarray, column: str, stand_in: str) -> float:
    """Out-of-fold ROC AUC of the champion's pipeline refitted with `column` replaced by
    `stand_in` (this month's visits by the usual ones), on the same folds as the scores.

    Replacing rather than dropping keeps the pipeline as it is, and takes away every feature
    built from the column too (visit_trend becomes 1, visit_drop 0 for everyone).
    """
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    X = customers[features].copy()
    X[column] = X[stand_in].astype(X[column].dtype)
    proba = cross_val_predict(clone(pipeline), X, customers[target], cv=PredefinedSplit(fold),
                              method="predict_proba")[:, 1]
    return float(roc_auc_score(customers[target], proba))


def calibration_by_decile(y, proba, bins: int = 10) -> pd.DataFrame:
    """Customers cut into `bins` equal groups by predicted risk (lowest first): mean predicted
    churn against observed churn in each."""
    frame = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(proba, dtype=float)})
    order = frame["p"].rank(method="first")
    frame["decile"] = pd.qcut(order, bins, labels=False) + 1
    return frame.groupby("decile").agg(customers=("y", "size"), predicted=("p", "mean"),
                                       observed=("y", "mean")).reset_index()


def caveats(pipeline, customers: pd.DataFrame, features: list[str], target: str,
            oof_proba: np.ndarray, fold: np.ndarray, settings: Mapping,
            labels: Mapping[str, str], driver_rank: int | None = None) -> Section:
    """The caveats section; `oof_proba`/`fold`: every customer's out-of-fold churn probability
    and fold (gymchurn.churn.out_of_fold), so the comparison uses the same folds;
    `driver_rank`: the visits column's rank among the model's drivers (1 = strongest)."""
    from sklearn.metrics import roc_auc_score

    section = Section("caveats", "Caveats")
    y = customers[target].to_numpy()
    now, usual = settings["visits_now"], settings["visits_usual"]
    with_auc = float(roc_auc_score(y, oof_proba))
    without_auc = without_column_auc(pipeline, customers, features, target, fold, now, usual)
    section.numbers.update(oof_auc=with_auc, oof_auc_without_visits_now=without_auc)
    name_now = labels.get(now, now)
    # Rule: "much of the model's edge" when taking the column away loses more than a third of
    # the AUC above chance (0.5); else the model stands without it.
    lost = (with_auc - without_auc) / max(with_auc - 0.5, 1e-9)
    verdict = ("much of the model's edge rests on it: a member who stops coming is partly "
               "the churn itself, so act on the other drivers too" if lost > 1 / 3 else
               "it stands without it, so the other columns carry most of the signal")
    # `driver_rank` counts the features built from the column (visit_trend, visit_drop).
    signal = ("The strongest signal" if driver_rank == 1 else
              f"Driver #{driver_rank}" if driver_rank else "The column")
    section.say(f"**This month's visits.** {signal}, {name_now} (with the features built from "
                f"it), may overlap the churn definition (a member who has stopped coming). "
                f"Refitted with it replaced by {labels.get(usual, usual)}, the model still ranks "
                f"leavers above stayers {without_auc:.2f} of the time against {with_auc:.2f} "
                f"(0.5 is guessing, 1 perfect; scores from models that did not see the "
                f"customer): {verdict}.")
    contract = settings["self_selected"]
    rates = customers.groupby(contract)[target].mean()
    short, long_ = rates.index.min(), rates.index.max()
    section.numbers.update(churn_shortest_contract=float(rates[short]),
                           churn_longest_contract=float(rates[long_]))
    section.say(f"**Self-selection.** Members on {long_}-month contracts churn "
                f"{rates[long_]:.0%} against {rates[short]:.0%} on {short}-month ones, but they "
                "chose their contract: the gap mixes what the contract does with who chooses it. "
                "Every comparison in this report is an association; a pilot with a random "
                "control group measures an effect.")
    section.say(f"**One snapshot.** The table is one month of {len(customers):,} customers. The "
                "model was tested on customers it did not see from that month, not on a later "
                "month: check each new month against the outcomes before relying on it. The "
                "active customers' scores are for a month they in fact stayed: read them as the "
                "risk of customers like them.")

    table = calibration_by_decile(y, oof_proba, int(settings["deciles"]))
    gap = (table["predicted"] - table["observed"]).abs()
    worst = table.loc[gap.idxmax()]
    section.numbers.update(calibration_max_gap=float(gap.max()))
    # Rule: the probabilities "read as chances" when no decile is off by more than 5 points.
    reading = ("they can be read as chances" if gap.max() <= 0.05 else
               "read them as a ranking more than as exact chances")
    section.say(f"**Calibration.** Cut into ten equal groups by risk, predicted and observed "
                f"churn differ by at most {100 * gap.max():.1f} points (group "
                f"{int(worst.decile)}: {100 * worst.predicted:.1f}% predicted, "
                f"{100 * worst.observed:.1f}% observed): {reading}.")
    section.numbers["calibration"] = table  # the appendix shows the table
    # Page one's caveats paragraph: the same four points, one clause each.
    section.numbers["short"] = [
        f"Even without {name_now}, the model ranks leavers above stayers {without_auc:.2f} of "
        f"the time (with it {with_auc:.2f}; 0.5 is guessing).",
        "Comparisons between customers are associations, not effects: members chose their "
        "contracts and classes themselves; pilots with a random control group measure effects.",
        "The table is one month: the model has not yet been tested on a later month.",
        f"Predicted churn is within {100 * gap.max():.1f} points of the observed in every tenth "
        "of customers by risk.",
        "Money figures rest on assumed costs and values (section 2), not measurements."]
    return section


def calibration_table_block(section: Section, table: pd.DataFrame) -> None:
    """The calibration deciles as a table in `section` (the appendix's model section)."""
    section.table("Calibration by risk decile (out-of-fold): predicted against observed churn.",
                  frame_of(table.to_dict("records"), {"predicted": ".0%", "observed": ".0%"}))
