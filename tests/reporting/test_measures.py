"""What to try: standardised churn and the Mantel-Haenszel odds ratio against hand computations,
Simpson's paradox, pilot sizes against the closed form, the measures chosen per group, and the
sentences following the table's pattern."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from gymchurn.churn.actions import load_catalogue
from gymchurn.errors import GymchurnError
from gymchurn.reporting.measures import (
    LONG_PILOT_MONTHS,
    check_pilot,
    comparable_rates,
    group_measures,
    pilot_design,
    stratum_cells,
    what_to_try,
)

SETTINGS = {"relative_reduction": 0.25, "alpha": 0.05, "power": 0.8, "min_stratum": 10,
            "min_for_share": 0.5, "per_group": 2}
CLASSES = {"Group_visits == 1"}


def customers(cells: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """Customers from (Lifetime, Group_visits, customers, of them churned) cells."""
    rows = [{"Lifetime": life, "Group_visits": exposed, "Churn": int(i < churned)}
            for life, exposed, n, churned in cells for i in range(n)]
    return pd.DataFrame(rows)


# Lifetime 0-1 (one band with edges [0, 2]): exposed 20 (4 churn), unexposed 20 (10 churn);
# Lifetime 2+: exposed 30 (15 churn), unexposed 10 (6 churn).
TWO_STRATA = customers([(0, 1, 10, 2), (1, 1, 10, 2), (0, 0, 10, 5), (1, 0, 10, 5),
                        (2, 1, 30, 15), (5, 0, 10, 6)])


def members_of(df: pd.DataFrame, per_band: dict[str, int]) -> np.ndarray:
    """The first `n` customers of each band ('0-1', '2+') are the group's members."""
    band = stratum_cells(df, {"Lifetime": [0, 2]})["Lifetime"]
    members = np.zeros(len(df), dtype=bool)
    for label, n in per_band.items():
        members[np.flatnonzero(band == label)[:n]] = True
    return members


def test_standardised_rates_by_hand():
    members = members_of(TWO_STRATA, {"0-1": 30, "2+": 10})  # weights 0.75 and 0.25
    got = comparable_rates(TWO_STRATA, "Churn", members, "Group_visits == 1", {"Lifetime": [0, 2]}, 10)
    assert got["available"] and got["strata_used"] == 2 and got["coverage"] == 1
    assert got["exposed_rate"] == pytest.approx(0.75 * 4 / 20 + 0.25 * 15 / 30)
    assert got["unexposed_rate"] == pytest.approx(0.75 * 10 / 20 + 0.25 * 6 / 10)
    assert got["difference"] == pytest.approx(got["exposed_rate"] - got["unexposed_rate"])
    assert (got["exposed_n"], got["unexposed_n"]) == (50, 30)
    # Mantel-Haenszel: (4*10/40 + 15*4/40) / (16*10/40 + 15*6/40) = 2.5 / 6.25
    assert got["odds_ratio"] == pytest.approx(0.4)
    assert got["odds_ratio_low"] < 0.4 < got["odds_ratio_high"]
    # Only strata holding members count: members all in Lifetime 0-1 leave its odds ratio alone.
    young = comparable_rates(TWO_STRATA, "Churn", members_of(TWO_STRATA, {"0-1": 30}),
                             "Group_visits == 1", {"Lifetime": [0, 2]}, 10)
    assert young["strata_with_members"] == 1 and young["odds_ratio"] == pytest.approx(0.25)
    assert (young["exposed_rate"], young["unexposed_rate"]) == (pytest.approx(0.2), pytest.approx(0.5))
    # Lifetime 2+ has only 10 unexposed: with min_stratum 15 it drops out, the rest covers 75 %.
    thin = comparable_rates(TWO_STRATA, "Churn", members, "Group_visits == 1", {"Lifetime": [0, 2]}, 15)
    assert thin["coverage"] == pytest.approx(0.75) and thin["strata_used"] == 1
    assert (thin["exposed_rate"], thin["unexposed_rate"]) == (pytest.approx(0.2), pytest.approx(0.5))
    assert thin["odds_ratio"] == pytest.approx((4 * 10 / 40) / (16 * 10 / 40))


def test_no_comparison_says_why():
    members = members_of(TWO_STRATA, {"0-1": 5})
    none = comparable_rates(TWO_STRATA, "Churn", members, None, {}, 10)
    assert not none["available"] and "no comparison" in none["reason"] and none["exposed_rate"] is None
    thin = comparable_rates(TWO_STRATA, "Churn", members, "Group_visits == 1", {"Lifetime": None}, 50)
    assert not thin["available"] and "at least 50" in thin["reason"] and thin["odds_ratio"] is None


def test_mantel_haenszel_matches_a_hand_computation():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"Lifetime": rng.integers(0, 12, 2000), "Contract_period": rng.choice([1, 6, 12], 2000),
                       "Group_visits": rng.integers(0, 2, 2000)})
    df["Churn"] = (rng.random(2000) < 0.15 + 0.03 * (df.Lifetime < 3) - 0.05 * df.Group_visits).astype(int)
    strata = {"Contract_period": None, "Lifetime": [0, 3, 6]}
    got = comparable_rates(df, "Churn", np.ones(len(df), bool), "Group_visits == 1", strata, 10)
    band = pd.cut(df.Lifetime, [0, 3, 6, np.inf], right=False)
    numerator = denominator = 0.0
    for _, s in df.groupby([df.Contract_period, band], observed=True):
        a = ((s.Group_visits == 1) & (s.Churn == 1)).sum()
        b = ((s.Group_visits == 1) & (s.Churn == 0)).sum()
        c = ((s.Group_visits == 0) & (s.Churn == 1)).sum()
        d = ((s.Group_visits == 0) & (s.Churn == 0)).sum()
        numerator, denominator = numerator + a * d / len(s), denominator + b * c / len(s)
    assert got["strata_used"] == 9 and got["odds_ratio"] == pytest.approx(numerator / denominator)


def test_simpsons_paradox_gives_the_stratified_answer():
    # Exposed customers crowd into the risky first months, so overall they churn more, yet
    # within each stratum they churn less.
    df = customers([(0, 1, 900, 540), (0, 0, 100, 80), (6, 1, 100, 10), (6, 0, 900, 180)])
    got = comparable_rates(df, "Churn", np.ones(len(df), bool), "Group_visits == 1",
                           {"Lifetime": [0, 6]}, 10)
    assert got["crude_exposed_rate"] > got["crude_unexposed_rate"]  # 55 % against 26 %
    assert got["exposed_rate"] < got["unexposed_rate"] and got["odds_ratio_high"] < 1
    assert got["exposed_rate"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.1)


def closed_form_per_arm(baseline: float, reduction: float, alpha: float, power: float) -> int:
    """Two arms of n, arcsine-transformed proportions (variance 1/n each): the difference h is
    detected when h / sqrt(2/n) = z_{1-alpha/2} + z_power, so n = 2 ((z_a + z_b) / h)^2."""
    goal = baseline * (1 - reduction)
    h = 2 * math.asin(math.sqrt(baseline)) - 2 * math.asin(math.sqrt(goal))
    return math.ceil(2 * ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / h) ** 2)


@pytest.mark.parametrize("baseline, reduction, alpha, power, eligible", [
    (0.76, 0.25, 0.05, 0.8, 225), (0.17, 0.25, 0.05, 0.8, 1048), (0.3, 0.1, 0.01, 0.9, 400),
    (0.5, 0.5, 0.1, 0.8, 7)])
def test_pilot_size_matches_the_closed_form(baseline, reduction, alpha, power, eligible):
    pilot = pilot_design(baseline, reduction, eligible, alpha, power)
    assert pilot["per_arm"] == closed_form_per_arm(baseline, reduction, alpha, power)
    assert pilot["total"] == 2 * pilot["per_arm"]
    assert pilot["intake_months"] == math.ceil(2 * pilot["per_arm"] / eligible)
    assert pilot["months"] == pilot["intake_months"] + 1
    assert pilot["goal_churn"] == pytest.approx(baseline * (1 - reduction))
    assert pilot_design(baseline, reduction, 0, alpha, power)["months"] is None


@pytest.mark.parametrize("baseline, reduction", [(0.3, 0), (0.3, 1), (0.3, 1.2), (0, 0.25), (1, 0.25)])
def test_pilot_refuses_nonsense(baseline, reduction):
    with pytest.raises(GymchurnError, match="strictly between 0 and 1"):
        pilot_design(baseline, reduction, 100, 0.05, 0.8)


@pytest.mark.parametrize("change", [{"alpha": 1.5}, {"power": 0}, {"per_group": 0}, {"per_group": 1.5},
                                    {"min_stratum": 0}, {"min_for_share": 0}, {"alpha": "x"},
                                    {"power": None}])
def test_bad_pilot_settings_are_one_clear_error(change):
    with pytest.raises(GymchurnError, match="pilot in conf/report.yaml"):
        check_pilot({**SETTINGS, **change})
    with pytest.raises(GymchurnError, match="power"):
        check_pilot({k: v for k, v in SETTINGS.items() if k != "power"})


def catalogue(exposure: str | None = "Group_visits == 1"):
    item = {"exposure": exposure, "exposure_says": "take group classes",
            "strata": {"Lifetime": [0, 6]}, "driver": "Group_visits"}
    return load_catalogue({"default_action": "check-in call", "items": [
        {"name": "A", "for": "Partner == 1", "action": "action A", **item},
        {"name": "B", "for": "Promo_friends == 1", "action": "action B", **item},
        {"name": "C", "for": "Lifetime >= 0", "action": "action C", **item}]})


def test_measures_chosen_follow_min_for_share_and_per_group():
    rng = np.random.default_rng(0)
    n = 1000
    df = pd.DataFrame({"Lifetime": rng.integers(0, 12, n), "Group_visits": rng.integers(0, 2, n),
                       "Partner": (np.arange(n) % 10 < 6).astype(int),       # 60 % of everyone
                       "Promo_friends": (np.arange(n) % 10 >= 6).astype(int),  # 40 %
                       "Churn": (rng.random(n) < 0.3).astype(int)})
    members, active = np.ones(n, bool), (df.Churn == 0).to_numpy()

    def chosen(**change):
        result = group_measures(df, "Churn", [("all", members, active)], catalogue(), {**SETTINGS, **change})
        return [m["name"] for m in result[0]["measures"]], result[0]

    assert chosen()[0] == ["A", "C"]
    assert chosen(per_group=1)[0] == ["A"]
    assert chosen(min_for_share=0.3)[0] == ["A", "B"]
    assert chosen(min_for_share=0.3, per_group=3)[0] == ["A", "B", "C"]
    _, group = chosen()
    a = group["measures"][0]
    meant = df.Partner == 1
    assert a["for_share"] == pytest.approx(0.6) and a["for_now"] == (meant & (df.Churn == 0)).sum()
    assert a["pilot"]["baseline_churn"] == pytest.approx(df.Churn[meant].mean())
    assert a["comparison"]["members"] == meant.sum()
    assert group["churn"] == pytest.approx(df.Churn.mean()) and group["active"] == active.sum()


def patterned(effect: float, n: int = 4000, seed: int = 1) -> pd.DataFrame:
    """Group-class goers churn `effect` more (negative: less) than others at the same Lifetime."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"Lifetime": rng.integers(0, 12, n), "Group_visits": rng.integers(0, 2, n),
                       "Partner": 1, "Promo_friends": 0})
    risk = np.where(df.Lifetime < 6, 0.45, 0.2) + effect * df.Group_visits
    df["Churn"] = (rng.random(n) < risk).astype(int)
    return df


@pytest.mark.parametrize("effect, words", [(-0.15, "churned less often"), (0.15, "churned more often"),
                                           (0.0, "churned about as often")])
def test_the_sentences_follow_the_pattern(effect, words):
    df = patterned(effect)
    groups = [("everyone", np.ones(len(df), bool), (df.Churn == 0).to_numpy())]
    section, detail = (what_to_try(df, "Churn", groups, catalogue(), {**SETTINGS, "per_group": 1},
                                   {"Group_visits": 2}, {"Lifetime": "months as a member"},
                                   detail=d) for d in (False, True))
    measure = section.numbers["groups"][0]["measures"][0]
    shown, pilot = measure["comparison"], measure["pilot"]
    assert len(section.sentences) == 1  # the main part: one sentence and the table
    text = " ".join(detail.sentences)
    assert words in text and "an association, not the effect" in text
    assert "same months as a member (0-5, 6+)" in text and "(#2 among the churn drivers)" in text
    assert (f"{words}: {100 * shown['exposed_rate']:.0f}% against "
            f"{100 * shown['unexposed_rate']:.0f}%") in text
    assert f"{pilot['per_arm']:,} customers per arm" in text
    assert f"{pilot['intake_months']} month" in text
    row = section.blocks[-1].frame.iloc[0]
    assert row["pilot: per arm"] == str(pilot["per_arm"])
    assert row["pilot: months"] == str(pilot["months"])
    # The main table names the behaviour compared and shows churn only, no odds ratio.
    assert row["comparable customers: churn of those who do vs not"] == (
        f"take group classes: {100 * shown['exposed_rate']:.0f}% vs {100 * shown['unexposed_rate']:.0f}%")
    assert row["driver (rank)"] == "Group_visits (#2)"  # no label given: the name itself


def test_the_sentences_say_when_the_data_cannot_tell():
    df = patterned(-0.15)
    df.loc[:99, "Partner"] = 0  # 100 customers for whom measure A is not
    none = np.zeros(len(df), bool)
    only_a = load_catalogue({"default_action": "check-in call", "items": [
        {"name": "A", "for": "Partner == 1", "action": "action A", "exposure": None}]})
    groups = [("partners", (df.Partner == 1).to_numpy(), (df.Churn == 0).to_numpy()),
              ("no partner", (df.Partner == 0).to_numpy(), none), ("nobody", none, none)]
    text = " ".join(what_to_try(df, "Churn", groups, only_a, SETTINGS, {}, detail=True).sentences)
    assert "The data holds no comparison for it" in text and "churned less often" not in text
    assert "For no partner (0 active now" in text and "the default applies: check-in call" in text
    assert "For nobody: the customer table holds none of its members." in text


JARGON = ["Mantel-Haenszel", "odds ratio", "standardis", "conf/", "OR "]


def test_the_main_part_speaks_plainly_and_the_appendix_keeps_the_method():
    """The main part: plain driver names (also for a driver without a rank), no odds ratios,
    no method names or config paths, and comparable customers said to be all customers of the
    table; the appendix keeps the methods."""
    df = patterned(-0.15)
    groups = [("everyone", np.ones(len(df), bool), (df.Churn == 0).to_numpy())]
    labels = {"Group_visits": "takes group classes", "Lifetime": "months as a member"}
    main, detail = (what_to_try(df, "Churn", groups, catalogue(), {**SETTINGS, "per_group": 1}, {},
                                labels, detail=d) for d in (False, True))
    table = main.blocks[-1].frame
    cells = " ".join([main.sentences[0], main.blocks[-1].caption, *table.to_numpy().ravel()])
    assert not [w for w in JARGON if w in cells] and not re.search(r"\bCI\b", cells)
    assert table["driver (rank)"].tolist() == ["takes group classes"]  # label, no rank
    assert "all customers in the table with the same months as a member" in main.sentences[0]
    assert "not only the members themselves" in main.sentences[0]
    appendix = " ".join(detail.sentences)
    assert all(w in appendix for w in ("Mantel-Haenszel", "odds ratio", "95% CI", "conf/measures/"))
    assert main.sentences[0] != detail.sentences[0]  # the appendix does not repeat the intro


def test_a_pilot_taking_more_than_a_year_is_flagged_in_the_table():
    """Few eligible customers a month make a long pilot: the table's months cell says so, as
    the appendix sentence does; a short one is shown plainly."""
    df = patterned(-0.15)
    everyone = np.ones(len(df), bool)
    few = np.zeros(len(df), bool)
    few[np.flatnonzero(df.Churn == 0)[:20]] = True  # 20 active members: a long intake
    groups = [("few active", everyone, few), ("many active", everyone, (df.Churn == 0).to_numpy())]
    section, detail = (what_to_try(df, "Churn", groups, catalogue(), {**SETTINGS, "per_group": 1},
                                   {}, detail=d) for d in (False, True))
    long_pilot, short_pilot = (g["measures"][0]["pilot"] for g in section.numbers["groups"])
    assert long_pilot["months"] > LONG_PILOT_MONTHS >= short_pilot["months"]
    assert section.blocks[-1].frame["pilot: months"].tolist() == [
        f"{long_pilot['months']} (too long: pool groups)", str(short_pilot["months"])]
    said = [s for s in detail.sentences if "pool this group" in s]
    assert len(said) == 1 and said[0].startswith("For few active")


def test_the_catalogue_does_not_pool_months_one_and_two():
    """Months 1 and 2 churn very differently: the shipped catalogue's bands keep them apart."""
    from gymchurn.config import compose_config

    for item in compose_config("report").measures["items"]:
        edges = item["strata"].get("Lifetime")
        if edges is not None:
            assert {1, 2, 3} <= set(edges), item["name"]


def test_a_pilot_takes_in_only_the_members_new_each_month():
    """Onboarding is for months 0 and 1: two monthly intakes are eligible now, one comes each
    month, so the pilot takes twice as many months as counting everyone eligible now."""
    rng = np.random.default_rng(3)
    n = 300
    df = pd.DataFrame({"Lifetime": rng.integers(0, 2, n), "Group_visits": rng.integers(0, 2, n),
                       "Churn": (rng.random(n) < 0.5).astype(int)})
    item = {"name": "onboarding", "for": "Lifetime <= 1", "action": "welcome call",
            "exposure": None}
    groups = [("new", np.ones(n, bool), (df.Churn == 0).to_numpy())]
    flow, stock = (group_measures(df, "Churn", groups, load_catalogue(
        {"default_action": "call", "items": [{**item, **extra}]}), SETTINGS)[0]["measures"][0]["pilot"]
        for extra in ({"new_each_month": "Lifetime == 0"}, {}))
    new_now = int(((df.Churn == 0) & (df.Lifetime == 0)).sum())
    assert flow["eligible_now"] == new_now and stock["eligible_now"] == int((df.Churn == 0).sum())
    assert flow["intake_months"] == math.ceil(flow["total"] / new_now)
    assert flow["intake_months"] > stock["intake_months"]
