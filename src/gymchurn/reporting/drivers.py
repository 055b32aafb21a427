"""Section 3, what drives churn: global importance (SHAP or coefficients), permutation
importance, partial dependence of the top drivers, each driver's direction in words, patterns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.churn.reasons import model_input
from gymchurn.plots import importance_figure, plt
from gymchurn.reporting.blocks import (
    COMPARISONS,
    Section,
    binary_columns,
    compare_groups,
    compare_rates,
    frame_of,
    pct,
    printed_cut,
    side_phrase,
)


def driver_direction(customers: pd.DataFrame, target: str, column: str, binary: bool,
                     phrases: Mapping, labels: Mapping[str, str] | None = None
                     ) -> tuple[str, dict] | None:
    """One sentence on how churn differs across `column`, riskier side first.

    Rule: a binary column compares its two values; a numeric one its low end with its high end
    (values <= 25th and >= 75th percentile), or below/above the median when those coincide.
    Each side is named by the share of customers it really holds (ties at a percentile can make
    "the lowest quarter" a third of the table) and by its cut, printed so that it selects the
    same customers (blocks.printed_cut). None when one side is empty. The numbers hold each
    side's customers as boolean masks (`risky_members`, `safe_members`).
    """
    x, churn = customers[column], customers[target]
    name = (labels or {}).get(column, column)
    if binary:
        low, high, low_text, high_text = x == 0, x == 1, None, None
    else:
        q25, q50, q75 = x.quantile([0.25, 0.5, 0.75])
        (low_op, low_at), (high_op, high_at) = (("≤", q25), ("≥", q75)) if q25 < q75 else \
            (("<", q50), ("≥", q50))
        low, high = COMPARISONS[low_op](x, low_at), COMPARISONS[high_op](x, high_at)
        # Each cut printed so that the printed condition selects exactly that side.
        low_cut = f"{low_op} {printed_cut(low_op, low_at, x)}"
        high_cut = f"{high_op} {printed_cut(high_op, high_at, x)}"
        low_text = f"the lowest {low.mean():.0%}, {name} {low_cut}"
        high_text = f"the highest {high.mean():.0%}, {name} {high_cut}"
    if not low.any() or not high.any():
        return None
    rates = compare_groups(churn, low, high)
    high_is_risky = churn[high].mean() > churn[low].mean()
    if high_is_risky:
        rates = compare_groups(churn, high, low)
    risky, safe = (high_text, low_text) if high_is_risky else (low_text, high_text)

    def side(high_side: bool, text: str | None, first: bool = False) -> str:
        words = side_phrase(column, high_side, phrases)
        words = words[:1].upper() + words[1:] if first else words
        return f"**{words}**" + (f" ({text})" if text else "")

    sentence = compare_rates(side(high_is_risky, risky, first=True), rates,
                             side(not high_is_risky, safe))
    risky_side, safe_side = (high, low) if high_is_risky else (low, high)
    return sentence, {**rates, "risky_side": "high" if high_is_risky else "low",
                      "risky_members": risky_side, "safe_members": safe_side,
                      "risky_words": side_phrase(column, high_is_risky, phrases),
                      "safe_words": side_phrase(column, not high_is_risky, phrases)}


def pattern_mask(customers: pd.DataFrame, when: str) -> pd.Series:
    """The customers a configured pattern (pandas `eval` over the columns) selects."""
    from gymchurn.churn.actions import condition_mask

    return condition_mask(customers, when, "report pattern", "`patterns` in conf/report.yaml")


def pattern_comparison(customers: pd.DataFrame, target: str, when: str, says: str) -> tuple[str, dict]:
    """Churn of customers matching a configured condition against everyone else."""
    mask = pattern_mask(customers, when)
    if not mask.any() or mask.all():
        return (f"Customers whose {says}: {'none' if not mask.any() else 'all'} of them, so there "
                "is nothing to compare.", {"n": int(mask.sum())})
    rates = compare_groups(customers[target], mask, ~mask)
    subject = f"Customers whose {says} ({rates['risky_n']:,} of {len(mask):,})"
    return compare_rates(subject, rates, "the others"), rates


def global_importance(pipeline, X: pd.DataFrame) -> tuple[pd.DataFrame, str, plt.Figure]:
    """(feature, importance) of the model's own features, what the numbers are, and a figure.

    A linear model: |coefficient| on its standardised inputs (bar chart). A tree model: mean
    |SHAP value| from the shap package's TreeExplainer (exact TreeSHAP), with its beeswarm
    plot, which also shows each feature's direction.
    """
    estimator = pipeline[-1]
    X_model = model_input(pipeline, X)
    if hasattr(estimator, "coef_"):
        coef = np.ravel(estimator.coef_)
        table = pd.DataFrame({"feature": list(X_model.columns), "importance": np.abs(coef)})
        what = "|coefficient| on standardised features (linear model)"
        table = table.sort_values("importance", ascending=False).reset_index(drop=True)
        figure = importance_figure(table.assign(importance_mean=table["importance"],
                                                importance_std=0.0), "Coefficients", xlabel=what)
        return table, what, figure
    import shap  # seconds to import; only the report needs it

    explanation = shap.TreeExplainer(estimator)(X_model)
    if explanation.values.ndim == 3:  # one slice per class (random forests): churn is class 1
        explanation = explanation[..., 1]
    table = pd.DataFrame({"feature": list(X_model.columns),
                          "importance": np.abs(explanation.values).mean(axis=0)})
    what = "mean |SHAP value| (TreeSHAP; log-odds for boosting, probability for forests)"
    plt.figure()  # beeswarm draws on the current figure
    shap.plots.beeswarm(explanation, max_display=len(X_model.columns), show=False, plot_size=(8, 7))
    figure = plt.gcf()
    figure.tight_layout()
    return table.sort_values("importance", ascending=False).reset_index(drop=True), what, figure


def permutation_table(pipeline, X_test: pd.DataFrame, y_test: pd.Series, repeats: int = 5,
                      seed: int = 0) -> pd.DataFrame:
    """Permutation importance on the holdout (drop in ROC AUC when one column is shuffled),
    largest first: the measure every model family shares (drivers and recommendations use it)."""
    from sklearn.inspection import permutation_importance

    perm = permutation_importance(pipeline, X_test, y_test, scoring="roc_auc", n_repeats=repeats,
                                  random_state=seed)
    return pd.DataFrame({"feature": X_test.columns, "importance_mean": perm.importances_mean,
                         "importance_std": perm.importances_std}).sort_values(
        "importance_mean", ascending=False).reset_index(drop=True)


def overlap(a, b) -> float:
    """Share of customers in either group who are in both (Jaccard); boolean masks over the
    same rows, compared by position."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    either = (a | b).sum()
    return float((a & b).sum() / either) if either else 1.0


def churn_drivers(pipeline, X_test: pd.DataFrame, customers: pd.DataFrame, target: str,
                  columns: Mapping, phrases: Mapping, patterns: Sequence[Mapping],
                  perm_table: pd.DataFrame, top_n: int = 4, seed: int = 0,
                  labels: Mapping[str, str] | None = None,
                  definitions: Mapping[str, str] | None = None,
                  same_customers: float = 0.9) -> Section:
    """`perm_table`: `permutation_table` of the pipeline on the holdout `X_test`; `labels`:
    plain names of the columns (engineered ones too); `definitions`: what each engineered
    feature is; `same_customers`: the overlap from which a pattern and a driver side, or two
    patterns, are one finding (`numbers["same_as"]`: pattern -> the finding it repeats)."""
    from sklearn.inspection import PartialDependenceDisplay

    labels = labels or {}
    section = Section("drivers", "What drives churn")
    shap_table, what, figure = global_importance(pipeline, X_test)
    section.numbers["global_importance"] = dict(zip(shap_table["feature"], shap_table["importance"],
                                                    strict=True))
    top = list(shap_table["feature"].head(top_n))
    section.numbers["top_drivers"] = top
    engineered = [c for c in top if definitions and c in definitions]
    # Rule: the driver prose follows the model's own importance (SHAP for trees, coefficients
    # for linear models), engineered features included and defined where first named.
    section.say(f"What the model leans on most ({what}, on the holdout's {len(X_test):,} "
                "customers): " + ", ".join(f"{i + 1}. {labels.get(c, c)}"
                                           for i, c in enumerate(top)) + "."
                + ("".join(f" {labels.get(c, c).capitalize()} is {definitions[c]}."
                           for c in engineered)))
    section.figure("global_importance", f"Global importance: {what}. In the SHAP plot each dot "
                   "is a customer; red = high value of the feature, right = pushes towards churn.",
                   figure)

    section.numbers["permutation_importance"] = dict(zip(perm_table["feature"],
                                                         perm_table["importance_mean"], strict=True))
    section.figure("permutation_importance", "Permutation importance on the holdout: how much "
                   "ROC AUC drops when one column is shuffled (any model).",
                   importance_figure(perm_table, "Permutation importance (holdout)"))
    section.table("The raw columns ranked by permutation importance (drop in holdout ROC AUC).",
                  frame_of([{"rank": i + 1, "column": labels.get(r.feature, r.feature),
                             "AUC drop": r.importance_mean, "± sd": r.importance_std}
                            for i, r in enumerate(perm_table.itertuples())],
                           {"AUC drop": ".4f", "± sd": ".4f"}))

    raw_top = list(perm_table["feature"].head(top_n))
    display = PartialDependenceDisplay.from_estimator(  # floats: sklearn refuses integer grids
        pipeline, X_test.astype("float64"), raw_top, kind="average", grid_resolution=20,
        n_cols=min(len(raw_top), 4), random_state=seed,
    )
    display.figure_.set_size_inches(3.2 * min(len(raw_top), 4), 3.0 * int(np.ceil(len(raw_top) / 4)))
    display.figure_.suptitle("Partial dependence: the model's mean churn probability as one "
                             "column varies", fontsize=9)
    display.figure_.tight_layout()
    section.figure("partial_dependence", "Partial dependence of the predicted churn "
                   "probability on the raw columns that matter most (permutation importance).",
                   display.figure_)
    curves = {c: np.ravel(r["average"]) for c, r in zip(raw_top, display.pd_results, strict=True)}
    grids = {c: np.ravel(r["grid_values"][0]) for c, r in zip(raw_top, display.pd_results,
                                                               strict=True)}

    # The model's own features for every customer (engineered ones computed), with churn.
    features = [c for c in columns if c != target and c in customers]
    model_frame = model_input(pipeline, customers[features]).assign(**{target: customers[target]})
    binary = set(binary_columns(columns))
    directions = {}
    seen: list[tuple[str, np.ndarray]] = []  # (words, customers) of each finding named so far
    # Rule: for each top driver, the observed churn of its riskier side against its safer side
    # (see driver_direction), then, for a raw column, the model's view (partial dependence).
    for column in top:
        if column not in model_frame:
            continue
        found = driver_direction(model_frame, target, column, column in binary, phrases, labels)
        if found is None:
            continue
        sentence, rates = found
        for side in ("risky", "safe"):  # the sides' customers: patterns are checked against them
            seen.append((rates.pop(f"{side}_words"), rates.pop(f"{side}_members").to_numpy()))
        directions[column] = dict(rates)
        if column in curves:
            curve, grid = curves[column], grids[column]
            sentence += (f" In the model, moving {labels.get(column, column)} from {grid[0]:.3g} "
                         f"to {grid[-1]:.3g} moves the mean predicted churn from {pct(curve[0])} "
                         f"to {pct(curve[-1])}.")
            # Rule: when the partial dependence runs against the observed rates, say so.
            if abs(curve[-1] - curve[0]) >= 0.01 and (curve[-1] > curve[0]) != (
                    rates["risky_side"] == "high"):
                sentence += (" This runs against the raw rates: with the other columns held as "
                             "they are, the column adds information beyond what it shares with "
                             "them (see the strongly correlated pairs).")
            directions[column].update(pdp_start=float(curve[0]), pdp_end=float(curve[-1]))
        section.say(sentence)
    section.numbers["directions"] = directions

    # Rule: a pattern that selects nearly the same customers (overlap at least
    # `same_customers`) as a driver side named above or an earlier pattern is the same
    # finding: named once, not reported twice.
    for pattern in patterns:
        mask = pattern_mask(customers, pattern["when"]).to_numpy()
        twin = next((says for says, other in seen if overlap(mask, other) >= same_customers), None)
        if twin is not None:
            section.numbers.setdefault("same_as", {})[pattern["says"]] = twin
            continue
        sentence, rates = pattern_comparison(customers, target, pattern["when"], pattern["says"])
        section.numbers.setdefault("patterns", {})[pattern["says"]] = rates
        seen.append((pattern["says"], mask))
        section.say(sentence)
    return section
