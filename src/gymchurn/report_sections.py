"""The retention-strategy report's sections, one function each (the four tasks of the brief).

Each function takes plain data (the customer table, a fitted churn pipeline, segment labels)
and returns a `Section`: text, tables and figures in reading order, plus the numbers the text
quotes. No MLflow here: `gymchurn.report` fetches the models and renders the sections.

Every sentence comes from a rule written beside it, applied to numbers computed here, so a
different table gives a different, still true, report. Rates are observed in the table; "what
if" figures are the model's predictions, labelled as such (not causal effects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shap
from sklearn.inspection import PartialDependenceDisplay, permutation_importance

from gymchurn.errors import GymchurnError
from gymchurn.evaluation import classification_metrics
from gymchurn.plots import classifier_figures, importance_figure, plt
from gymchurn.predict import band_index
from gymchurn.reasons import model_input
from gymchurn.segmentation import (
    phrase,
    portrait_table,
    profile_heatmap,
    standardised_differences,
)

STAYED, CHURNED = "#4c72b0", "#dd5555"


# ---------------------------------------------------------------- the section container


@dataclass
class Text:
    text: str


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame  # cells already formatted as text: HTML and Markdown show the same


@dataclass
class Figure:
    name: str  # file stem of the PNG
    caption: str
    figure: plt.Figure


@dataclass
class Section:
    key: str
    title: str
    blocks: list = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def say(self, text: str) -> None:
        self.blocks.append(Text(text))

    def table(self, caption: str, frame: pd.DataFrame) -> None:
        self.blocks.append(Table(caption, frame.astype(str)))

    def figure(self, name: str, caption: str, figure: plt.Figure) -> None:
        self.blocks.append(Figure(name, caption, figure))

    @property
    def sentences(self) -> list[str]:
        return [b.text for b in self.blocks if isinstance(b, Text)]


# ---------------------------------------------------------------- wording helpers


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def compare_rates(subject: str, rates: Mapping, others: str) -> str:
    """"<subject> churned 2.3 times as often as <others>: 46.0 % against 20.0 %."."""
    a, b = rates["risky_rate"], rates["safe_rate"]
    if b == 0:
        return f"{subject} churned {pct(a)}, while none of {others} did."
    return f"{subject} churned {a / b:.1f} times as often as {others}: {pct(a)} against {pct(b)}."


def side_phrase(column: str, high: bool, phrases: Mapping) -> str:
    return phrase(column, 1.0 if high else -1.0, phrases)


def binary_columns(columns: Mapping) -> list[str]:
    """Columns whose allowed values are exactly {0, 1}."""
    return [c for c, rule in columns.items() if sorted(rule.get("values") or []) == [0, 1]]


def categorical_columns(columns: Mapping) -> list[str]:
    """Columns with a short list of allowed values (binary flags, contract length)."""
    return [c for c, rule in columns.items() if rule.get("values")]


def compare_groups(churn: pd.Series, risky: pd.Series, safe: pd.Series) -> dict[str, float]:
    """Observed churn of two groups of customers (boolean masks)."""
    return {"risky_rate": float(churn[risky].mean()), "safe_rate": float(churn[safe].mean()),
            "risky_n": int(risky.sum()), "safe_n": int(safe.sum())}


def driver_direction(customers: pd.DataFrame, target: str, column: str, binary: bool,
                     phrases: Mapping) -> tuple[str, dict] | None:
    """One sentence on how churn differs across `column`, riskier side first.

    Rule: a binary column compares its two values; a numeric one its lowest quarter with its
    highest quarter (values <= 25th and >= 75th percentile), or below/above the median when
    the quarters coincide. None when one side is empty.
    """
    x, churn = customers[column], customers[target]
    if binary:
        low, high, low_text, high_text = x == 0, x == 1, f"{column} = 0", f"{column} = 1"
    else:
        q25, q50, q75 = x.quantile([0.25, 0.5, 0.75])
        if q25 < q75:
            low, high = x <= q25, x >= q75
            low_text, high_text = f"lowest quarter, {column} ≤ {q25:.3g}", f"highest quarter, ≥ {q75:.3g}"
        else:
            low, high = x < q50, x >= q50
            low_text, high_text = f"{column} < {q50:.3g}", f"{column} ≥ {q50:.3g}"
    if not low.any() or not high.any():
        return None
    rates = compare_groups(churn, low, high)
    high_is_risky = churn[high].mean() > churn[low].mean()
    if high_is_risky:
        rates = compare_groups(churn, high, low)
    risky, safe = (high_text, low_text) if high_is_risky else (low_text, high_text)
    sentence = compare_rates(
        f"**{side_phrase(column, high_is_risky, phrases).capitalize()}** ({risky})", rates,
        f"**{side_phrase(column, not high_is_risky, phrases)}** ({safe})",
    )
    return sentence, {**rates, "risky_side": "high" if high_is_risky else "low"}


def pattern_comparison(customers: pd.DataFrame, target: str, when: str, says: str) -> tuple[str, dict]:
    """Churn of customers matching a configured condition (pandas `eval` over the columns)
    against everyone else."""
    try:
        mask = customers.eval(when)
    except Exception as err:  # pandas raises many kinds for a bad expression
        raise GymchurnError(
            f"report pattern '{when}' cannot be evaluated on the table ({err}). Fix `patterns` "
            "in conf/report.yaml: use column names, numbers and comparisons."
        ) from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise GymchurnError(f"report pattern '{when}' is not a yes/no condition; fix conf/report.yaml.")
    if not mask.any() or mask.all():
        return (f"Customers whose {says}: {'none' if not mask.any() else 'all'} of them, so there "
                "is nothing to compare.", {"n": int(mask.sum())})
    rates = compare_groups(customers[target], mask, ~mask)
    subject = f"Customers whose {says} ({rates['risky_n']:,} of {len(mask):,})"
    return compare_rates(subject, rates, "the others"), rates


def frame_of(rows: list[dict], formats: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A table of text cells; `formats` maps a column to a format spec or 'pct'."""
    table = pd.DataFrame(rows)
    for column, spec in (formats or {}).items():
        if column in table:
            table[column] = [pct(v) if spec == "pct" else format(v, spec) for v in table[column]]
    return table


# ---------------------------------------------------------------- 1. data at a glance


def data_overview(customers: pd.DataFrame, target: str, columns: Mapping,
                  strong_correlation: float = 0.7) -> Section:
    section = Section("data", "1. Data at a glance")
    features = [c for c in columns if c != target and c in customers]
    churn = customers[target]
    n, churned = len(customers), int(churn.sum())
    section.numbers.update(n_customers=n, n_churned=churned, churn_rate=churned / n)
    section.say(f"The table holds {n:,} customers with {len(features)} features each; "
                f"{churned:,} of them ({pct(churned / n)}) left this month.")

    differences = standardised_differences(customers[features], churn.to_numpy())
    gap = differences.loc[1] if 1 in differences.index else pd.Series(0.0, index=features)
    means = customers.groupby(target)[features].mean()
    rows = [{"feature": c, "mean, stayed": means.loc[0, c] if 0 in means.index else np.nan,
             "mean, churned": means.loc[1, c] if 1 in means.index else np.nan,
             "difference (std. units)": gap[c]}
            for c in gap.abs().sort_values(ascending=False).index]
    section.table("Each feature's mean for customers who stayed and who churned, largest "
                  "standardised difference first.",
                  frame_of(rows, {"mean, stayed": ".2f", "mean, churned": ".2f",
                                  "difference (std. units)": "+.2f"}))
    top = gap.abs().sort_values(ascending=False).index[:3]
    section.numbers["largest_differences"] = list(top)
    # Rule: name the three features whose means differ most (in standard deviations).
    section.say("Churned and staying customers differ most in " + "; ".join(
        f"{c} ({means.loc[1, c]:.2f} against {means.loc[0, c]:.2f})"
        for c in top if 0 in means.index and 1 in means.index) + ".")
    section.figure("distributions", "Distribution of each feature, stayed vs churned (densities).",
                   distributions_figure(customers, features, target))

    rate_rows = []
    for column in categorical_columns({c: columns[c] for c in features}):
        for value, group in customers.groupby(column)[target]:
            rate_rows.append({"feature": column, "value": value, "customers": len(group),
                              "churn rate": group.mean()})
    rates = pd.DataFrame(rate_rows)
    section.numbers["churn_by_value"] = {(r["feature"], int(r["value"])): float(r["churn rate"])
                                         for r in rate_rows}
    section.table("Churn rate by each binary and contract feature.",
                  frame_of(rate_rows, {"customers": ",d", "churn rate": "pct"}))
    if len(rates):
        section.figure("churn_by_feature", "Churn rate by value of each binary and contract "
                       "feature (bar labels: customers).", churn_rate_figure(rates))

    corr = customers[[*features, target]].corr()
    pairs = [(a, b, corr.loc[a, b]) for i, a in enumerate(features) for b in features[i + 1:]
             if abs(corr.loc[a, b]) >= strong_correlation]
    section.numbers["strong_pairs"] = [(a, b, float(r)) for a, b, r in pairs]
    section.figure("correlations", "Correlation between every pair of columns (Pearson r).",
                   correlation_figure(corr))
    # Rule: pairs with |r| >= the configured strength are called out as near duplicates.
    if pairs:
        section.say(
            f"Strongly correlated pairs (|r| ≥ {strong_correlation:g}): " + "; ".join(
                f"{a} and {b} (r = {r:.2f})" for a, b, r in pairs)
            + ". Each pair carries nearly the same information: read their importances together."
        )
    else:
        section.say(f"No two features are strongly correlated (all |r| < {strong_correlation:g}).")
    return section


def distributions_figure(customers: pd.DataFrame, features: Sequence[str], target: str) -> plt.Figure:
    cols = 4
    rows = int(np.ceil(len(features) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows))
    for ax, column in zip(np.ravel(axes), features, strict=False):
        values = customers[column]
        bins = 25
        if values.nunique() <= 12:  # few values: one bar per value, ticked at the values
            distinct = np.unique(values)
            bins = np.append(distinct, distinct[-1] + 1) - 0.5
            ax.set_xticks(distinct)
        for label, colour, name in ((0, STAYED, "stayed"), (1, CHURNED, "churned")):
            ax.hist(values[customers[target] == label], bins=bins, density=True, alpha=0.55,
                    color=colour, label=name)
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in np.ravel(axes)[len(features):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def churn_rate_figure(rates: pd.DataFrame) -> plt.Figure:
    features = list(dict.fromkeys(rates["feature"]))
    fig, axes = plt.subplots(1, len(features), figsize=(2.1 * len(features) + 1, 3.2), sharey=True)
    for ax, feature in zip(np.atleast_1d(axes), features, strict=True):
        part = rates[rates["feature"] == feature]
        bars = ax.bar(part["value"].astype(str), part["churn rate"], color=CHURNED)
        ax.bar_label(bars, [f"{n:,}" for n in part["customers"]], fontsize=7)
        ax.set_title(feature, fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("churn rate")
    fig.tight_layout()
    return fig


def correlation_figure(corr: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 7.5))
    image = ax.imshow(corr.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    for i in range(len(corr)):
        for j in range(len(corr)):
            ax.text(j, i, f"{corr.iat[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(corr)), corr.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(corr)), corr.index, fontsize=7)
    fig.colorbar(image, ax=ax, label="Pearson r")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 2. predicting churn


def model_performance(pipeline, threshold: float, X_test: pd.DataFrame, y_test: pd.Series,
                      all_proba: np.ndarray, champion: str, holdout_note: str,
                      families: pd.DataFrame | None) -> Section:
    """Holdout metrics of the champion (computed here), the other families' best runs (from
    MLflow, passed in as `families`), curves, and the threshold in customers per 1,000 (of the
    holdout, and of the whole table, whose probabilities are `all_proba`)."""
    section = Section("model", "2. Predicting churn")
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


METRIC_COLUMNS = ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss"]


# ---------------------------------------------------------------- 3. what drives churn


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


def churn_drivers(pipeline, X_test: pd.DataFrame, y_test: pd.Series, customers: pd.DataFrame,
                  target: str, columns: Mapping, phrases: Mapping, patterns: Sequence[Mapping],
                  top_n: int = 4, repeats: int = 5, seed: int = 0) -> Section:
    section = Section("drivers", "3. What drives churn")
    shap_table, what, figure = global_importance(pipeline, X_test)
    section.numbers["global_importance"] = dict(zip(shap_table["feature"], shap_table["importance"],
                                                    strict=True))
    section.say(f"Global importance: {what}, on the holdout's {len(X_test):,} customers; the "
                f"model's own features, engineered ones included. Largest: "
                + ", ".join(shap_table["feature"].head(top_n)) + ".")
    section.figure("global_importance", f"Global importance: {what}. In the SHAP plot each dot "
                   "is a customer; red = high value of the feature, right = pushes towards churn.",
                   figure)

    perm = permutation_importance(pipeline, X_test, y_test, scoring="roc_auc", n_repeats=repeats,
                                  random_state=seed)
    perm_table = pd.DataFrame({"feature": X_test.columns, "importance_mean": perm.importances_mean,
                               "importance_std": perm.importances_std}).sort_values(
        "importance_mean", ascending=False).reset_index(drop=True)
    section.numbers["permutation_importance"] = dict(zip(perm_table["feature"],
                                                         perm_table["importance_mean"], strict=True))
    section.figure("permutation_importance", "Permutation importance on the holdout: how much "
                   "ROC AUC drops when one column is shuffled (any model).",
                   importance_figure(perm_table, "Permutation importance (holdout)"))
    section.table("The raw columns ranked by permutation importance (drop in holdout ROC AUC).",
                  frame_of([{"rank": i + 1, "feature": r.feature, "AUC drop": r.importance_mean,
                             "± sd": r.importance_std} for i, r in enumerate(perm_table.itertuples())],
                           {"AUC drop": ".4f", "± sd": ".4f"}))

    top = list(perm_table["feature"].head(top_n))
    section.numbers["top_drivers"] = top
    section.say("Top drivers (by permutation importance, the measure every model family shares): "
                + ", ".join(f"{i + 1}. {c}" for i, c in enumerate(top)) + ".")
    display = PartialDependenceDisplay.from_estimator(  # floats: sklearn refuses integer grids
        pipeline, X_test.astype("float64"), top, kind="average", grid_resolution=20,
        n_cols=min(len(top), 4), random_state=seed,
    )
    display.figure_.set_size_inches(3.2 * min(len(top), 4), 3.0 * int(np.ceil(len(top) / 4)))
    display.figure_.suptitle("Partial dependence: the model's mean churn probability as one "
                             "column varies", fontsize=9)
    display.figure_.tight_layout()
    section.figure("partial_dependence", "Partial dependence of the predicted churn "
                   "probability on each top driver (the other columns as observed).",
                   display.figure_)

    binary = set(binary_columns(columns))
    directions = {}
    # Rule: for each top driver, the observed churn of its riskier side against its safer side
    # (see driver_direction), then the model's view (partial dependence from low to high).
    for column, pdp in zip(top, display.pd_results, strict=True):
        found = driver_direction(customers, target, column, column in binary, phrases)
        if found is None:
            continue
        sentence, rates = found
        curve = np.ravel(pdp["average"])
        grid = np.ravel(pdp["grid_values"][0])
        sentence += (f" In the model, moving {column} from {grid[0]:.3g} to {grid[-1]:.3g} moves the "
                     f"mean predicted churn from {pct(curve[0])} to {pct(curve[-1])}.")
        # Rule: when the partial dependence runs against the observed rates, say so: with the
        # other columns held as they are, the column acts beyond what it shares with them.
        observed_rises = rates["risky_side"] == "high"
        if abs(curve[-1] - curve[0]) >= 0.01 and (curve[-1] > curve[0]) != observed_rises:
            sentence += (" This runs against the raw rates: with the other columns held as they "
                         f"are, {column} adds information beyond what it shares with them "
                         "(see the strongly correlated pairs).")
        directions[column] = {**rates, "pdp_start": float(curve[0]), "pdp_end": float(curve[-1])}
        section.say(sentence)
    section.numbers["directions"] = directions
    for pattern in patterns:
        sentence, rates = pattern_comparison(customers, target, pattern["when"], pattern["says"])
        section.numbers.setdefault("patterns", {})[pattern["says"]] = rates
        section.say(sentence)
    return section


# ---------------------------------------------------------------- 4. customer portraits


def customer_portraits(customers: pd.DataFrame, target: str, labels, names: Mapping[int, str],
                       clustered: Sequence[str], phrases: Mapping, source: str,
                       top_features: int = 3) -> Section:
    section = Section("segments", "4. Customer portraits")
    features = [c for c in customers.columns if c != target]
    labels = np.asarray(labels)
    differences = standardised_differences(customers[features], labels)
    portraits = portrait_table(customers[features], labels, customers[target], names, differences,
                               top_features).sort_values("churn_rate")
    section.numbers["segments"] = {
        int(r.segment): {"name": r.name, "size": int(r.size), "share": float(r.share),
                         "churn_rate": float(r.churn_rate)} for r in portraits.itertuples()}
    section.say(f"Segments from {source}, clustered on {', '.join(clustered) or 'its columns'}; "
                f"{len(portraits)} groups, from lowest to highest churn.")
    rows = []
    for r in portraits.itertuples():
        diff = differences.loc[r.segment]
        apart = diff.abs().sort_values(ascending=False).index[:top_features]
        words = ", ".join(f"{side_phrase(c, diff[c] > 0, phrases)} ({c} {r._asdict()[c]:.1f})"
                          for c in apart)
        rows.append({"segment": r.segment, "name": r.name, "customers": r.size, "share": r.share,
                     "churn rate": r.churn_rate, "what sets it apart": words})
        # Rule: each segment is described by its `top_features` columns of largest
        # standardised difference from everyone else, in the column's words.
        section.say(f"**{r.name}** (segment {r.segment}: {r.size:,} customers, {pct(r.share)}): "
                    f"churn {pct(r.churn_rate)}; sets itself apart as {words}.")
    section.table("Segments, lowest churn first.",
                  frame_of(rows, {"customers": ",d", "share": "pct", "churn rate": "pct"}))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(portraits) + 1.5))
    ax.barh([f"{r.segment}: {r.name}" for r in portraits.itertuples()], portraits["churn_rate"],
            color=CHURNED)
    ax.axvline(customers[target].mean(), color="k", linestyle="--", label="all customers")
    ax.set_xlabel("churn rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    section.figure("segment_churn", "Churn rate per segment (dashed: all customers).", fig)
    section.figure("segment_profiles", "What sets each segment apart (colour: standardised "
                   "difference from the other customers; text: segment mean).",
                   profile_heatmap(differences, portraits, list(clustered)))
    return section


# ---------------------------------------------------------------- 5. recommendations


def what_if(pipeline, X: pd.DataFrame, changes: Mapping[str, float], threshold: float) -> dict:
    """The model's churn probability for customers `X` before and after setting `changes`.

    Only customers the change actually changes count. A model-based what-if: what this model
    predicts, not what the change would cause.
    """
    changed = (X[list(changes)] != pd.Series(changes)).any(axis=1)
    if not changed.any():
        return {"customers": 0}
    before = pipeline.predict_proba(X[changed])[:, 1]
    after = pipeline.predict_proba(X[changed].assign(**changes))[:, 1]
    return {"customers": int(changed.sum()), "before": float(before.mean()),
            "after": float(after.mean()), "drop": float(before.mean() - after.mean()),
            "unflagged": float((after < threshold).mean())}


def recommendations(pipeline, threshold: float, customers: pd.DataFrame, proba: np.ndarray,
                    target: str, features: Sequence[str], labels, names: Mapping[int, str],
                    bands: Sequence[str], cuts: np.ndarray, scenarios: Sequence[Mapping],
                    permutation: Mapping[str, float],
                    strong_pairs: Sequence, n_groups: int = 3, min_drop: float = 0.05,
                    negligible: float = 0.002) -> Section:
    """`proba`: the churn model's probability for each row of `customers`."""
    section = Section("recommendations", "5. Recommendations")
    X = customers[list(features)]
    band = np.asarray(bands)[band_index(proba, cuts)]
    labels = np.asarray(labels)
    groups = pd.DataFrame({"segment": labels, "band": band, "churn": customers[target].to_numpy(),
                           "proba": proba})
    section.say("Every customer in the table scored by the churn model, in risk bands "
                + ", ".join(f"{b} from {c:.2f}" for b, c in zip(bands, cuts, strict=True))
                + " (the top band starts at the decision threshold). These are in-sample scores "
                "for most customers: they size the groups, they are not a test.")
    crosstab = pd.crosstab(groups["segment"], groups["band"]).reindex(columns=list(bands),
                                                                      fill_value=0)
    section.numbers["groups"] = {(int(s), b): int(crosstab.loc[s, b]) for s in crosstab.index
                                 for b in crosstab.columns}
    rows = [{"segment": f"{s}: {names[int(s)]}", **{b: int(crosstab.loc[s, b]) for b in bands},
             "churned this month": pct(groups.loc[groups["segment"] == s, "churn"].mean())}
            for s in crosstab.index]
    section.table("Customers per segment and risk band (now).", frame_of(rows))

    # Rule: target groups are the segments with the most customers in the top risk band,
    # largest first; a group needs at least one customer.
    top_band = bands[-1]
    flagged_total = int((band == top_band).sum())
    targets = crosstab[top_band].sort_values(ascending=False, kind="stable")
    targets = targets[targets > 0].head(n_groups)
    section.numbers["target_groups"] = [int(s) for s in targets.index]
    for s, count in targets.items():
        inside = groups[(groups["segment"] == s) & (groups["band"] == top_band)]
        section.say(f"Target group: **{names[int(s)]}** in the {top_band}-risk band: "
                    f"{count:,} customers ({pct(count / max(flagged_total, 1))} of all "
                    f"{flagged_total:,} flagged), mean predicted churn {pct(inside['proba'].mean())}.")
    if targets.empty:
        section.say(f"No customer is in the {top_band}-risk band: there is no target group now.")

    flagged = X[band == top_band]
    results = []
    for scenario in scenarios:
        changes = dict(scenario["set"])
        outcome = what_if(pipeline, flagged, changes, threshold) if len(flagged) else {"customers": 0}
        ranks = [f"{c} (driver #{list(permutation).index(c) + 1})" for c in changes if c in permutation]
        results.append({"measure": scenario["name"], "changes": ", ".join(
            f"{c} = {v:g}" for c, v in changes.items()), "drivers": ", ".join(ranks), **outcome})
    section.numbers["what_if"] = {r["measure"]: r for r in results}
    shown = [{"measure": r["measure"], "sets": r["changes"], "flagged customers it changes":
              r["customers"], "predicted churn before": r.get("before", np.nan),
              "after": r.get("after", np.nan), "no longer flagged": r.get("unflagged", np.nan)}
             for r in results]
    section.table("Model-based what-if for the flagged customers (what the model predicts if only "
                  "these columns changed; not a causal effect).",
                  frame_of(shown, {"predicted churn before": "pct", "after": "pct",
                                   "no longer flagged": "pct"}))
    # Rule: a measure is recommended when the model predicts a mean drop of at least
    # `min_drop` for the flagged customers it applies to; strongest first.
    for r in sorted(results, key=lambda r: -r.get("drop", 0.0)):
        if r["customers"] == 0:
            section.say(f"What-if, {r['measure']}: every flagged customer already has "
                        f"{r['changes']}, so the model has nothing to say.")
        elif r["drop"] >= min_drop:
            section.say(
                f"Measure: **{r['measure']}** ({r['changes']}; {r['drivers'] or 'not a top driver'}). "
                f"For the {r['customers']:,} flagged customers it would change, the model's mean "
                f"churn probability goes from {pct(r['before'])} to {pct(r['after'])}, and "
                f"{pct(r['unflagged'])} of them fall below the threshold (model-based what-if, "
                f"not a causal effect)."
            )
        else:
            section.say(
                f"Not recommended on this evidence: {r['measure']} ({r['changes']}): the model's "
                f"mean churn probability for the {r['customers']:,} flagged customers it would "
                f"change moves only from {pct(r['before'])} to {pct(r['after'])}."
            )

    # Other patterns, each from a rule stated inline.
    segments = groups.groupby("segment")["churn"].agg(["mean", "size"])
    safest = int(segments["mean"].idxmin())
    section.say(f"Loyal core (the segment with the lowest churn): **{names[safest]}**, "
                f"{int(segments.loc[safest, 'size']):,} customers, churn "
                f"{pct(segments.loc[safest, 'mean'])}: keep them with low-cost care, not offers.")
    weak = [c for c, v in permutation.items() if v <= negligible]
    if weak:
        section.say(f"Barely matter for churn once the other columns are known (shuffling each "
                    f"costs ≤ {negligible:g} holdout AUC): " + ", ".join(weak) + ".")
    for a, b, r in strong_pairs:
        section.say(f"{a} and {b} move together (r = {r:.2f}); a measure that changes one "
                    "changes the other too.")
    section.numbers["loyal_segment"] = safest
    section.numbers["negligible_features"] = weak
    return section
