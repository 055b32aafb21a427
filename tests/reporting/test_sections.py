"""Each report section's numbers against a direct computation on a small generated table, and
the generated sentences following the data when the data changes."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from gymchurn.churn.actions import load_catalogue
from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.features import BehaviourChangeFeatures
from gymchurn.pipeline import build_pipeline
from gymchurn.reporting.blocks import COMPARISONS, Figure, compare_rates, side_phrase
from gymchurn.reporting.capacity import campaign_section
from gymchurn.reporting.drivers import (
    churn_drivers,
    driver_direction,
    global_importance,
    pattern_comparison,
    permutation_table,
)
from gymchurn.reporting.economics import Assumptions
from gymchurn.reporting.overview import data_overview
from gymchurn.reporting.performance import model_performance
from gymchurn.reporting.portraits import customer_portraits
from gymchurn.reporting.recommendations import Rules, ScoredTable, recommendations

THRESHOLD = 0.4
PATTERNS = [{"when": "Avg_class_frequency_current_month < Avg_class_frequency_total",
             "says": "visits fell"}]
SCENARIOS = [{"name": "group sessions", "set": {"Group_visits": 1}},
             {"name": "long contract", "set": {"Contract_period": 12, "Month_to_end_contract": 12}}]


@pytest.fixture(scope="module")
def setting(customers):
    cfg = compose_config(overrides=["model=lgbm", "features=engineered", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    X_train, X_test, y_train, y_test = train_test_split(
        customers[columns], customers["Churn"], test_size=0.3, stratify=customers["Churn"],
        random_state=0)
    pipeline = build_pipeline(cfg.features, cfg.model, columns,
                              {"n_estimators": 60, "verbose": -1}).fit(X_train, y_train)
    labels = KMeans(4, n_init=3, random_state=0).fit_predict(
        customers[["Contract_period", "Lifetime"]].to_numpy(dtype=float))
    return {
        "cfg": cfg, "columns": columns, "pipeline": pipeline, "X_test": X_test, "y_test": y_test,
        "labels": labels, "names": {s: f"group {s}" for s in range(4)},
        "data_columns": OmegaConf.to_container(cfg.data.columns),
        "phrases": OmegaConf.to_container(cfg.data.phrases),
    }


def figures_of(section) -> list[str]:
    return [b.name for b in section.blocks if isinstance(b, Figure)]


def test_data_overview_matches_direct_computation(customers, setting):
    section = data_overview(customers, "Churn", setting["data_columns"], 0.7)
    n = section.numbers
    assert n["n_customers"] == len(customers) and n["churn_rate"] == customers["Churn"].mean()
    direct = customers.groupby("Contract_period")["Churn"].mean()
    for value, rate in direct.items():
        assert n["churn_by_value"][("Contract_period", value)] == pytest.approx(rate)
    corr = customers.drop(columns="Churn").corr()
    strong = {(a, b) for a in corr for b in corr if a < b and abs(corr.loc[a, b]) >= 0.7}
    assert {tuple(sorted(p[:2])) for p in n["strong_pairs"]} == strong
    assert f"{len(customers):,} customers" in section.sentences[0]
    assert {"distributions", "churn_by_feature", "correlations"} <= set(figures_of(section))


def test_model_performance_matches_direct_computation(customers, setting):
    pipeline, X_test, y_test = setting["pipeline"], setting["X_test"], setting["y_test"]
    families = pd.DataFrame([{"family": "xgb", "features": "raw", "run_id": "abcdef123456",
                              **{f"test_{m}": 0.5 for m in ("roc_auc", "accuracy", "precision",
                                                            "recall", "f1", "log_loss")}}])
    all_proba = pipeline.predict_proba(customers[setting["columns"]])[:, 1]
    section = model_performance(pipeline, THRESHOLD, X_test, y_test, all_proba, "v1", "note", families)
    proba = pipeline.predict_proba(X_test)[:, 1]
    assert section.numbers["test_roc_auc"] == pytest.approx(roc_auc_score(y_test, proba))
    assert section.numbers["flagged_per_1000_holdout"] == pytest.approx(1000 * (proba >= THRESHOLD).mean())
    table = next(b for b in section.blocks if hasattr(b, "frame")).frame
    assert table["model"].tolist()[1].startswith("best xgb / raw") and len(table) == 2
    assert f"{1000 * (proba >= THRESHOLD).mean():.0f} of every 1,000" in " ".join(section.sentences)


def test_campaign_section_matches_direct_computation(setting):
    pipeline, X_test, y_test = setting["pipeline"], setting["X_test"], setting["y_test"]
    proba = pipeline.predict_proba(X_test)[:, 1]
    assumptions = Assumptions.from_config({"offer_cost": 15, "monthly_fee": 40, "months_kept": 3,
                                           "keep_rates": {"low": 0.1, "mid": 0.2, "high": 0.3}})
    section = campaign_section(y_test, proba, [0.1, 0.3], assumptions, "note on the threshold")
    # Campaign sizes: the riskiest 10 % of the holdout, counted directly.
    top = y_test.to_numpy()[np.argsort(-proba, kind="stable")][:round(0.1 * len(y_test))]
    assert section.numbers["leavers_reached_top_10pct"] == pytest.approx(top.sum() / y_test.sum())
    assert "gains" in {b.name for b in section.blocks if hasattr(b, "name")}
    # The best campaign in the middle scenario, by hand: kept x 120 - called x 15 per 1,000.
    nets = {}
    for share in (0.1, 0.3):
        n = round(share * len(y_test))
        reached = y_test.to_numpy()[np.argsort(-proba, kind="stable")][:n].sum()
        nets[share] = 0.2 * 1000 * share * (reached / n) * 120 - 1000 * share * 15
    best = max(nets, key=nets.get)
    assert section.numbers["best_share"] == best
    assert section.numbers["best_net"] == pytest.approx(nets[best])
    assert section.sentences[-1] == "note on the threshold"


def test_drivers_rank_and_directions_match_direct_computation(customers, setting):
    perm_table = permutation_table(setting["pipeline"], setting["X_test"], setting["y_test"],
                                   repeats=2, seed=0)
    section = churn_drivers(setting["pipeline"], setting["X_test"], customers, "Churn",
                            setting["data_columns"], setting["phrases"], PATTERNS, perm_table,
                            top_n=3, seed=0)
    n = section.numbers
    shap = n["global_importance"]
    assert n["top_drivers"] == sorted(shap, key=shap.get, reverse=True)[:3]  # the model's own
    assert len(shap) > len(setting["columns"])  # engineered features too
    model_frame = setting["pipeline"][:-1].transform(customers[setting["columns"]])
    assert set(n["directions"]) == set(n["top_drivers"])
    for column, rates in n["directions"].items():
        x, churn = model_frame[column], customers["Churn"]
        if x.nunique() == 2:
            a, b = churn[x == 1].mean(), churn[x == 0].mean()
        else:
            q25, q75 = x.quantile([0.25, 0.75])
            a, b = churn[x >= q75].mean(), churn[x <= q25].mean()
        assert [rates["risky_rate"], rates["safe_rate"]] == pytest.approx([max(a, b), min(a, b)])
    fell = customers.eval(PATTERNS[0]["when"])
    assert n["patterns"]["visits fell"]["risky_rate"] == pytest.approx(customers.loc[fell, "Churn"].mean())
    assert {"global_importance", "permutation_importance", "partial_dependence"} <= set(figures_of(section))


def test_portraits_match_direct_computation(customers, setting):
    section = customer_portraits(customers, "Churn", setting["labels"], setting["names"],
                                 ["Contract_period", "Lifetime"], setting["phrases"], "test", 3)
    direct = customers.groupby(setting["labels"])["Churn"].agg(["mean", "size"])
    for s, numbers in section.numbers["segments"].items():
        assert numbers["size"] == direct.loc[s, "size"]
        assert numbers["churn_rate"] == pytest.approx(direct.loc[s, "mean"])
        assert numbers["name"] == f"group {s}"

    # With the segments' rules, portrait clauses and the measures: each portrait says how to
    # find its members, describes them with their own numbers and suggests one measure.
    cfg = compose_config("report", [])
    catalogue = load_catalogue(OmegaConf.to_container(cfg.measures, resolve=True))
    rules = {s: f"rule of group {s}" for s in set(setting["labels"].tolist())}
    section = customer_portraits(customers, "Churn", setting["labels"], setting["names"], [],
                                 setting["phrases"], "test", 3, rules,
                                 OmegaConf.to_container(cfg.data.portrait), catalogue)
    for s in rules:
        text = next(t for t in section.sentences if t.startswith(f"**group {s}**"))
        ages = customers.loc[setting["labels"] == s, "Age"].mean()
        assert f"Find them with: rule of group {s}." in text and f"Aged {ages:.0f} on average" in text
        assert "Suggested measure: " in text


def test_recommendations_match_direct_computation(customers, setting):
    pipeline, columns = setting["pipeline"], setting["columns"]
    proba = pipeline.predict_proba(customers[columns])[:, 1]
    scored = ScoredTable(pipeline, THRESHOLD, customers, "Churn", columns, proba,
                         ["low", "medium", "high"], np.array([0.0, 0.2, THRESHOLD]))
    section = recommendations(scored, setting["labels"], setting["names"],
                              {"Lifetime": 0.1, "gender": 0.0}, [], Rules(SCENARIOS, n_groups=2))
    high = proba >= THRESHOLD
    for s in range(4):
        assert section.numbers["groups"].get((s, "high"), 0) == int((high & (setting["labels"] == s)).sum())
    flagged = customers.loc[high, columns]
    changed = flagged[flagged["Group_visits"] != 1]
    after = pipeline.predict_proba(changed.assign(Group_visits=1))[:, 1].mean()
    outcome = section.numbers["what_if"]["group sessions"]
    assert outcome["customers"] == len(changed) and outcome["after"] == pytest.approx(after)
    assert any("gender" in s and "Barely matter" in s for s in section.sentences)
    assert "model-based what-if" in " ".join(section.sentences)


def test_sentences_follow_the_data(customers, setting):
    """Remove churn from one segment: its portrait and the loyal-core sentence change with it."""
    labels, names = setting["labels"], setting["names"]
    rates = customers.groupby(labels)["Churn"].mean()
    riskiest = int(rates.idxmax())
    changed = customers.copy()
    changed.loc[labels == riskiest, "Churn"] = 0

    def sentences(table):
        portraits = customer_portraits(table, "Churn", labels, names, [], setting["phrases"], "t")
        proba = setting["pipeline"].predict_proba(table[setting["columns"]])[:, 1]
        scored = ScoredTable(setting["pipeline"], THRESHOLD, table, "Churn", setting["columns"],
                             proba, ["low", "high"], np.array([0.0, THRESHOLD]))
        advice = recommendations(scored, labels, names, {}, [], Rules([]))
        return portraits.sentences, advice.sentences

    before_portraits, before_advice = sentences(customers)
    after_portraits, after_advice = sentences(changed)
    mine = [s for s in after_portraits if s.startswith(f"**group {riskiest}**")]
    assert mine and "churn 0.0%" in mine[0]
    assert not any("churn 0.0%" in s for s in before_portraits if s.startswith(f"**group {riskiest}**"))
    loyal_after = next(s for s in after_advice if s.startswith("Loyal core"))
    assert f"group {riskiest}" in loyal_after
    assert loyal_after != next(s for s in before_advice if s.startswith("Loyal core"))


def test_direction_rules_put_the_riskier_side_first():
    table = pd.DataFrame({"Group_visits": [0, 0, 0, 0, 1, 1, 1, 1],
                          "Churn": [1, 1, 1, 0, 1, 0, 0, 0]})
    phrases = {"Group_visits": {"high": "group-class goers", "low": "no group classes"}}
    sentence, rates = driver_direction(table, "Churn", "Group_visits", True, phrases)
    assert sentence.startswith("**No group classes** churned 3.0 times as often")
    assert rates["risky_side"] == "low" and rates["risky_rate"] == 0.75

    table["Churn"] = [0, 0, 0, 0, 1, 0, 0, 0]
    sentence, _ = driver_direction(table, "Churn", "Group_visits", True, phrases)
    assert "while none of **no group classes**" in sentence
    assert compare_rates("A", {"risky_rate": 0.5, "safe_rate": 0.25}, "B") == (
        "A churned 2.0 times as often as B: 50.0% against 25.0%.")


def test_a_bad_pattern_names_the_expression(customers):
    with pytest.raises(GymchurnError, match="'Nonexistent > 1' cannot be evaluated"):
        pattern_comparison(customers, "Churn", "Nonexistent > 1", "x")
    with pytest.raises(GymchurnError, match="not a yes/no condition"):
        pattern_comparison(customers, "Churn", "Lifetime + 1", "x")


@pytest.mark.parametrize("family", ["logreg", "rf"])
def test_global_importance_for_linear_and_forest_models(customers, family):
    """Coefficients for a linear model; SHAP (churn class) for a forest."""
    cfg = compose_config(overrides=[f"model={family}", "features=raw", "n_jobs=1"])
    columns = feature_columns(cfg.data)
    params = {"n_estimators": 20} if family == "rf" else {}
    pipeline = build_pipeline(cfg.features, cfg.model, columns, params).fit(
        customers[columns], customers["Churn"])
    table, what, _ = global_importance(pipeline, customers[columns].head(100))
    assert sorted(table["feature"]) == sorted(columns) and (table["importance"] >= 0).all()
    if family == "logreg":
        coef = np.abs(np.ravel(pipeline[-1].coef_))
        assert "coefficient" in what and table["importance"].max() == pytest.approx(coef.max())
    else:
        assert "SHAP" in what and table["importance"].iloc[0] > 0


def test_a_side_is_named_by_the_share_it_really_holds():
    """Ties at the 25th percentile make "the lowest quarter" a third or more of the table."""
    table = pd.DataFrame({"Lifetime": [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
                          "Churn": [1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]})
    sentence, _ = driver_direction(table, "Churn", "Lifetime", False,
                                   {"Lifetime": {"high": "long-standing", "low": "newcomers"}},
                                   {"Lifetime": "months as a member"})
    low = (table["Lifetime"] <= table["Lifetime"].quantile(0.25)).mean()
    assert f"**Newcomers** (the lowest {low:.0%}, months as a member ≤ " in sentence
    assert "quarter" not in sentence


def test_a_pattern_with_the_same_customers_as_an_earlier_one_is_named_once(customers, setting):
    perm_table = permutation_table(setting["pipeline"], setting["X_test"], setting["y_test"],
                                   repeats=1, seed=0)
    twins = [{"when": "Contract_period == 1", "says": "contract is month to month"},
             {"when": "Contract_period < 3", "says": "contract is short"}]
    section = churn_drivers(setting["pipeline"], setting["X_test"], customers, "Churn",
                            setting["data_columns"], setting["phrases"], twins, perm_table,
                            top_n=2, seed=0)
    assert list(section.numbers["patterns"]) == ["contract is month to month"]
    assert section.numbers["same_as"] == {"contract is short": "contract is month to month"}
    assert not any("contract is short" in s for s in section.sentences)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_driver_sides_printed_cut_selects_that_side(seed):
    """Re-applying "the lowest 25%, <name> ≤ <cut>" as printed gives that side's customers and
    churn on real-looking data (continuous visits and spend, whole months and ages, a ratio)."""
    df = make_synthetic_customers(4000, seed=seed)
    df["visit_trend"] = df.Avg_class_frequency_current_month / df.Avg_class_frequency_total.clip(lower=0.05)
    df["many_ties"] = np.round(df.Avg_class_frequency_total, 1)  # the quartiles fall on observed values
    labels = {c: c for c in df.columns}
    checked = 0
    for column in ["Avg_class_frequency_current_month", "Avg_additional_charges_total", "Lifetime",
                   "Age", "visit_trend", "many_ties", "Month_to_end_contract"]:
        sentence, rates = driver_direction(df, "Churn", column, False, {}, labels)
        sides = re.findall(rf"\(the (lowest|highest) (\d+)%, {column} (≤|<|≥|>) ([-\d.]+)\)", sentence)
        assert len(sides) == 2, sentence
        for end, share, op, number in sides:
            printed = COMPARISONS[op](df[column], float(number))
            side = "risky" if (end == "highest") == (rates["risky_side"] == "high") else "safe"
            assert (printed == rates[f"{side}_members"]).all(), (column, op, number)
            assert f"{printed.mean():.0%}" == f"{share}%"
            assert df.Churn[printed].mean() == pytest.approx(rates[f"{side}_rate"])
            checked += 1
    assert checked == 14


def test_engineered_features_have_phrases():
    """The appendix names a driver's sides by phrases: an engineered feature never reads as its
    raw name ("high visit_drop")."""
    phrases = OmegaConf.to_container(compose_config().data.phrases)
    for feature in BehaviourChangeFeatures.definitions:
        for high in (True, False):
            assert feature not in side_phrase(feature, high, phrases)


def test_a_pattern_with_the_same_customers_as_a_driver_side_is_named_once(customers, setting):
    """"Membership is at most a month old" is the newcomers side of months as a member: the
    same finding, not repeated as a pattern; a pattern selecting other customers stays."""
    perm_table = permutation_table(setting["pipeline"], setting["X_test"], setting["y_test"],
                                   repeats=1, seed=0)
    first = churn_drivers(setting["pipeline"], setting["X_test"], customers, "Churn",
                          setting["data_columns"], setting["phrases"], [], perm_table, top_n=4, seed=0)
    column = next(c for c in first.numbers["top_drivers"] if c in customers and customers[c].nunique() > 2)
    high = first.numbers["directions"][column]["risky_side"] == "high"
    x = customers[column]
    when = f"{column} >= {float(x.quantile(0.75))!r}" if high else f"{column} <= {float(x.quantile(0.25))!r}"
    patterns = [{"when": when, "says": "is the riskier side again"},
                {"when": "Avg_class_frequency_current_month < Avg_class_frequency_total",
                 "says": "visits fell"}]
    section = churn_drivers(setting["pipeline"], setting["X_test"], customers, "Churn",
                            setting["data_columns"], setting["phrases"], patterns, perm_table,
                            top_n=4, seed=0)
    words = side_phrase(column, high, setting["phrases"])
    assert section.numbers["same_as"] == {"is the riskier side again": words}
    assert list(section.numbers["patterns"]) == ["visits fell"]
    assert not any("riskier side again" in s for s in section.sentences)
    # Asking for identical customers only (an overlap above 1 never happens), it is reported.
    strict = churn_drivers(setting["pipeline"], setting["X_test"], customers, "Churn",
                           setting["data_columns"], setting["phrases"], patterns, perm_table,
                           top_n=4, seed=0, same_customers=1.01)
    assert "is the riskier side again" in strict.numbers["patterns"]
