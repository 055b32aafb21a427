"""What to try: for each target group, the retention measures meant for its members (from the
catalogue in conf/measures/), what the data shows for each within comparable customers, and a
pilot that would measure whether it works.

"What the data shows" compares customers who already behave as a measure aims (they take group
classes, hold a long contract) with those who do not, within strata of comparable customers
(the same contract length, months as a member), weighted like the group's members: direct
standardisation, with the Mantel-Haenszel odds ratio over the same strata. Customers chose
that behaviour themselves, so this is an association, not the effect of the measure; only a
randomised pilot measures the effect, and `pilot_design` sizes one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gymchurn.churn.actions import Catalogue, Measure, condition_mask
from gymchurn.errors import GymchurnError
from gymchurn.reporting.blocks import Section, frame_of

METRIC = "churn within a month of the contact"
LONG_PILOT_MONTHS = 12  # a pilot taking longer than this is called out as too slow to wait for
PILOT_KEYS = ("relative_reduction", "alpha", "power", "min_stratum", "min_for_share", "per_group")


def check_pilot(settings: Mapping) -> dict:
    """The `pilot` settings of conf/report.yaml as plain numbers, or one error naming the fix."""
    try:
        s = {k: float(settings[k]) for k in PILOT_KEYS}
    except (KeyError, TypeError, ValueError) as err:
        raise GymchurnError(f"pilot in conf/report.yaml needs numbers {', '.join(PILOT_KEYS)}: "
                            f"{err}.") from None
    fractions = all(0 < s[k] < 1 for k in ("relative_reduction", "alpha", "power"))
    counts = all(s[k] >= 1 and s[k] == int(s[k]) for k in ("min_stratum", "per_group"))
    if not (fractions and counts and 0 < s["min_for_share"] <= 1):
        raise GymchurnError("pilot in conf/report.yaml: relative_reduction, alpha and power must "
                            "lie strictly between 0 and 1, min_for_share in (0, 1], min_stratum "
                            f"and per_group whole numbers of at least 1; got {s}.")
    return {**s, "min_stratum": int(s["min_stratum"]), "per_group": int(s["per_group"])}


def whole_pct(x: float) -> str:
    """Percentages for people: whole numbers, written as the whole report writes them ("27%")."""
    return f"{100 * x:.0f}%"


# ---------------------------------------------------------------- comparable customers


def _band_labels(edges: Sequence[float]) -> list[str]:
    """Edges [0, 1, 3, 6] -> '<0', '0', '1-2', '3-5', '6+' (whole-number edges: the last whole
    value below the next edge; other edges: 'a to under b')."""
    whole = all(float(e).is_integer() for e in edges)
    inner = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        if whole:
            last = int(high) - 1
            inner.append(f"{int(low)}" if last == int(low) else f"{int(low)}-{last}")
        else:
            inner.append(f"{low:g} to under {high:g}")
    return [f"<{edges[0]:g}", *inner, f"{edges[-1]:g}+"]


def stratum_cells(customers: pd.DataFrame, strata: Mapping) -> pd.DataFrame:
    """Each customer's stratum: one column per stratum column, its value (null edges) or band."""
    cells = {}
    for column, edges in strata.items():
        if edges is None:
            cells[column] = customers[column].to_numpy()
        else:
            # searchsorted(side="right"): 0 below the first edge, i for edges[i-1] <= x < edges[i]
            position = np.searchsorted(np.asarray(edges, dtype=float),
                                       customers[column].to_numpy(dtype=float), side="right")
            cells[column] = np.asarray(_band_labels(edges), dtype=object)[position]
    return pd.DataFrame(cells, index=customers.index)


def _no_comparison(reason: str, members: int) -> dict:
    return {"available": False, "reason": reason, "members": members, "members_covered": 0,
            "coverage": 0.0, "exposed_rate": None, "unexposed_rate": None, "difference": None,
            "odds_ratio": None, "odds_ratio_low": None, "odds_ratio_high": None,
            "exposed_n": 0, "unexposed_n": 0, "strata_used": 0, "strata_with_members": 0,
            "crude_exposed_rate": None, "crude_unexposed_rate": None, "strata": []}


def _plain(value):
    """A JSON-friendly scalar: numpy numbers as Python ones, a missing rate as None."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _finite(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def comparable_rates(customers: pd.DataFrame, target: str, members, exposure: str | None,
                     strata: Mapping, min_stratum: int) -> dict:
    """Churn of exposed against unexposed customers within comparable customers, weighted like
    the group's `members` (a boolean array over `customers`).

    Rules: a stratum is a cell of the strata columns (banded where edges are given). Within a
    stratum all its customers count, not only the group's members (a group defined as "no group
    classes" has no exposed members). A stratum is usable when it holds at least one member and
    at least `min_stratum` exposed and `min_stratum` unexposed customers. Each usable stratum's
    exposed and unexposed churn rates are weighted by its share of the members in usable strata
    (direct standardisation); `coverage` is the share of all members in usable strata. The
    Mantel-Haenszel odds ratio of churn (exposed over unexposed) and its 95% CI pool the same
    usable strata. Without an exposure, members or a usable stratum: no comparison, and why.
    """
    members = np.asarray(members, dtype=bool)
    if len(members) != len(customers):
        raise ValueError(f"members has {len(members)} entries for {len(customers)} customers")
    n_members = int(members.sum())
    if not exposure:
        return _no_comparison("the data holds no comparison for this measure", n_members)
    if n_members == 0:
        return _no_comparison("the group holds no members for this measure", n_members)
    exposed = condition_mask(customers, exposure, "exposure").to_numpy()
    churned = customers[target].to_numpy().astype(bool)
    counts = pd.DataFrame({"exposed_n": exposed, "exposed_churned": exposed & churned,
                           "unexposed_n": ~exposed, "unexposed_churned": ~exposed & churned,
                           "members": members}, index=customers.index).astype(int)
    if strata:
        cells = stratum_cells(customers, strata)
        table = counts.groupby([cells[c] for c in strata], sort=True, dropna=False).sum()
    else:  # no strata: everyone is comparable (one stratum)
        table = counts.sum().to_frame("everyone").T
    table = table[table["members"] > 0].assign(
        usable=lambda t: (t["exposed_n"] >= min_stratum) & (t["unexposed_n"] >= min_stratum),
        exposed_rate=lambda t: t["exposed_churned"] / t["exposed_n"].where(t["exposed_n"] > 0),
        unexposed_rate=lambda t: t["unexposed_churned"] / t["unexposed_n"].where(t["unexposed_n"] > 0))
    strata_rows = [{"stratum": " / ".join(map(str, key if isinstance(key, tuple) else (key,))),
                    **{k: _plain(v) for k, v in row.items()}} for key, row in table.iterrows()]
    crude = {"crude_exposed_rate": float(churned[exposed].mean()) if exposed.any() else None,
             "crude_unexposed_rate": float(churned[~exposed].mean()) if (~exposed).any() else None}
    used = table[table["usable"]]
    if used.empty:
        return {**_no_comparison(f"no stratum of comparable customers holds at least {min_stratum} "
                                 "customers on both sides", n_members),
                **crude, "strata_with_members": len(table), "strata": strata_rows}
    weight = used["members"] / used["members"].sum()
    exposed_rate = float((weight * used["exposed_rate"]).sum())
    unexposed_rate = float((weight * used["unexposed_rate"]).sum())
    odds, low, high = mantel_haenszel(used)
    return {"available": True, "reason": None, "members": n_members,
            "members_covered": int(used["members"].sum()),
            "coverage": float(used["members"].sum() / n_members),
            "exposed_rate": exposed_rate, "unexposed_rate": unexposed_rate,
            "difference": exposed_rate - unexposed_rate,
            "odds_ratio": odds, "odds_ratio_low": low, "odds_ratio_high": high,
            "exposed_n": int(used["exposed_n"].sum()), "unexposed_n": int(used["unexposed_n"].sum()),
            "strata_used": len(used), "strata_with_members": len(table), **crude,
            "strata": strata_rows}


def mantel_haenszel(counts: pd.DataFrame) -> tuple[float | None, float | None, float | None]:
    """Pooled odds ratio of churn, exposed over unexposed, and its 95% CI (statsmodels), from
    per-stratum counts; None where a zero cell leaves it undefined."""
    from statsmodels.stats.contingency_tables import StratifiedTable

    a = counts["exposed_churned"].to_numpy()
    b = counts["exposed_n"].to_numpy() - a
    c = counts["unexposed_churned"].to_numpy()
    d = counts["unexposed_n"].to_numpy() - c
    tables = np.array([[a, b], [c, d]], dtype=float)  # 2 x 2 x strata
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = StratifiedTable(tables)
        odds = _finite(pooled.oddsratio_pooled)
        low, high = (_finite(x) for x in pooled.oddsratio_pooled_confint(alpha=0.05))
    return (odds, low, high) if odds is not None and odds > 0 else (None, None, None)


# ---------------------------------------------------------------- pilot


def pilot_design(baseline_churn: float, relative_reduction: float, eligible_now: int,
                 alpha: float, power: float) -> dict:
    """Customers per arm for a randomised pilot to detect churn falling from `baseline_churn` to
    baseline x (1 - relative_reduction): two-sided test of two proportions at level `alpha` with
    `power`, on Cohen's h (statsmodels NormalIndPower). Intake: a random half of the eligible
    members each month gets the measure, the other half is the control; with `eligible_now`
    eligible a month, it takes ceil(2 x per arm / eligible_now) months of intake, plus one month
    to observe churn after the last contact."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    for name, value in (("baseline churn", baseline_churn), ("relative reduction", relative_reduction),
                        ("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise GymchurnError(f"pilot design: {name} must lie strictly between 0 and 1; got "
                                f"{value!r} (set pilot in conf/report.yaml).")
    if eligible_now < 0:
        raise GymchurnError(f"pilot design: eligible customers cannot be negative; got {eligible_now}.")
    goal = baseline_churn * (1 - relative_reduction)
    effect = float(proportion_effectsize(baseline_churn, goal))  # Cohen's h
    n = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1.0,
                                     alternative="two-sided")
    per_arm = math.ceil(float(np.squeeze(n)))
    intake = math.ceil(2 * per_arm / eligible_now) if eligible_now else None
    return {"baseline_churn": baseline_churn, "goal_churn": goal,
            "relative_reduction": relative_reduction, "effect_size": effect, "alpha": alpha,
            "power": power, "per_arm": per_arm, "total": 2 * per_arm,
            "eligible_now": int(eligible_now), "intake_months": intake,
            "months": intake + 1 if intake else None, "metric": METRIC,
            "treatment": "a random half of the eligible group members each month gets the measure",
            "control": "the other half of that month's eligible members, as usual (no contact)"}


# ---------------------------------------------------------------- per group


def chosen_measures(members: np.ndarray, masks: Mapping[str, np.ndarray], catalogue: Catalogue,
                    min_for_share: float, per_group: int) -> list[tuple[Measure, float]]:
    """The measures for at least `min_for_share` of the members, in catalogue order, at most
    `per_group`, each with the share of members it is for."""
    chosen = []
    for m in catalogue.items:
        share = float((masks[m.name] & members).sum() / members.sum()) if members.any() else 0.0
        if share >= min_for_share and len(chosen) < per_group:
            chosen.append((m, share))
    return chosen


def group_measures(customers: pd.DataFrame, target: str, groups: Sequence, catalogue: Catalogue,
                   settings: Mapping) -> list[dict]:
    """For each (name, members, active) group: its churn, and for each chosen measure what the
    data shows (among the members it is for) and a pilot (eligible: its active members it is
    for; baseline: the churn of the members it is for, the pilot's population)."""
    s = check_pilot(settings)
    masks = {m.name: condition_mask(customers, m.when, f"measure '{m.name}': for").to_numpy()
             for m in catalogue.items}
    new_masks = {m.name: condition_mask(customers, m.new_each_month,
                                        f"measure '{m.name}': new_each_month").to_numpy()
                 for m in catalogue.items if m.new_each_month}
    churned = customers[target].to_numpy().astype(bool)
    results = []
    for name, members, active in groups:
        members, active = np.asarray(members, dtype=bool), np.asarray(active, dtype=bool)
        rows = []
        for m, share in chosen_measures(members, masks, catalogue, s["min_for_share"], s["per_group"]):
            meant = members & masks[m.name]
            eligible = int((active & meant).sum())
            # A pilot's monthly intake: those new this month when the catalogue says who they
            # are (onboarding: months 0 and 1 are two intakes), else as many as are eligible now.
            monthly = int((active & meant & new_masks[m.name]).sum()) if m.new_each_month \
                else eligible
            baseline = float(churned[meant].mean())
            if 0 < baseline < 1:
                pilot, why = pilot_design(baseline, s["relative_reduction"], monthly, s["alpha"],
                                          s["power"]), None
                pilot["intake_rule"] = m.new_each_month
            else:
                pilot, why = None, ("none of them churned, so there is no churn to reduce"
                                    if baseline == 0 else "all of them churned; sizing a pilot "
                                    "needs a churn rate below 100%")
            rows.append({"name": m.name, "action": m.action, "driver": m.driver,
                         "exposure_says": m.exposure_says, "strata": list(m.strata),
                         "banded": {c: e for c, e in m.strata.items() if e is not None},
                         "for_share": share, "for_members": int(meant.sum()), "for_now": eligible,
                         "comparison": comparable_rates(customers, target, meant, m.exposure,
                                                        m.strata, s["min_stratum"]),
                         "pilot": pilot, "pilot_reason": why})
        results.append({"group": name, "members": int(members.sum()), "active": int(active.sum()),
                        "churn": float(churned[members].mean()) if members.any() else None,
                        "measures": rows})
    return results


# ---------------------------------------------------------------- words


def _comparable_words(row: dict, labels: Mapping) -> str:
    """'same contract length (months) and months as a member (0, 1-2, 3-5, 6+)'."""
    names = [labels.get(c, c) + (f" ({', '.join(_band_labels(row['banded'][c])[1:])})"
                                 if c in row["banded"] else "") for c in row["strata"]]
    return "same " + " and ".join(names) if names else "all customers"


def data_sentence(row: dict, labels: Mapping) -> str:
    """What the data shows for a measure. Rules: the odds ratio's 95% CI below 1 reads
    "churned less often", above 1 "more often", spanning 1 "about as often"; the comparison's
    coverage is named when part of the members fall in strata too thin to compare."""
    c = row["comparison"]
    if not c["available"]:
        if c["reason"] == "the data holds no comparison for this measure":
            return "The data holds no comparison for it (nobody is seen getting it): only a pilot can tell."
        return f"The data cannot compare it: {c['reason']}."
    low, high = c["odds_ratio_low"], c["odds_ratio_high"]
    how = ("" if low is None or high is None else "less often: " if high < 1
           else "more often: " if low > 1 else "about as often: ")
    odds = (f" (odds ratio {c['odds_ratio']:.2f}, 95% CI {low:.2f}-{high:.2f})"
            if c["odds_ratio"] is not None and low is not None and high is not None else "")
    text = (f"Among comparable customers ({_comparable_words(row, labels)}), those who "
            f"{row['exposure_says']} churned {how}{whole_pct(c['exposed_rate'])} against "
            f"{whole_pct(c['unexposed_rate'])}{odds}: an association, not the effect of the measure.")
    if c["coverage"] < 1:
        text += (f" The comparison covers {whole_pct(c['coverage'])} of the members it is for; the "
                 "rest are in strata with too few customers on one side.")
    return text


def months(n: int) -> str:
    return f"{n} month" if n == 1 else f"{n} months"


def too_long(pilot: dict) -> bool:
    """Rule: a pilot taking more than LONG_PILOT_MONTHS in all (intake and the month to observe)
    is too slow to wait for: it is called out wherever it is shown."""
    return bool(pilot.get("months")) and pilot["months"] > LONG_PILOT_MONTHS


def pilot_sentence(row: dict) -> str:
    """The pilot in words; a pilot that is `too_long` is called out."""
    p = row["pilot"]
    if p is None:
        return f"Pilot: cannot be sized: {row['pilot_reason']}."
    aim = (f"to see {p['metric']} fall from {whole_pct(p['baseline_churn'])} to "
           f"{whole_pct(p['goal_churn'])} ({whole_pct(p['relative_reduction'])} less) with "
           f"{whole_pct(p['power'])} power at the {whole_pct(p['alpha'])} level takes "
           f"{p['per_arm']:,} customers per arm ({p['total']:,} in all)")
    if p["intake_months"] is None:
        return f"Pilot: {aim}, but none of the members it is for is active now, so it cannot start."
    text = (f"Pilot: each month a random half of the eligible members gets it and the other half "
            f"is the control; {aim}: {months(p['intake_months'])} of intake at about "
            f"{p['eligible_now']:,} eligible a month "
            + (f"(those new this month: {p['intake_rule']})" if p.get("intake_rule") else
               "(if as many become eligible each month as are now)")
            + ", plus a month to observe "
            f"({months(p['months'])} in all).")
    if too_long(p):
        text += (f" That is more than {months(LONG_PILOT_MONTHS)}: pool this group with similar "
                 "ones or aim at a larger reduction.")
    return text


def _shows_cell(row: dict) -> str:
    """The main table's comparison: the behaviour compared and the churn of those who show it
    against those who do not ("take group classes: 69% vs 80%"); odds ratios stay in the
    appendix's sentences."""
    c = row["comparison"]
    if not c["available"]:
        return "no comparison in the data" if c["reason"].startswith("the data holds") \
            else "too few comparable customers"
    return (f"{row['exposure_says']}: {whole_pct(c['exposed_rate'])} vs "
            f"{whole_pct(c['unexposed_rate'])}")


def _months_cell(pilot: dict | None) -> str:
    """The main table's pilot length in months, with the warning when it is `too_long`."""
    if not pilot or not pilot.get("months"):
        return "-"
    return f"{pilot['months']} (too long: pool groups)" if too_long(pilot) else str(pilot["months"])


def _intro(s: Mapping, catalogue: Catalogue, labels: Mapping, detail: bool) -> str:
    """The section's opening: how measures are chosen, what "comparable customers" are, and
    how the pilots are sized; plain words in the main part, the methods in the appendix."""
    chosen = (f"Each target group gets the measures meant for at least "
              f"{whole_pct(s['min_for_share'])} of its members, at most {s['per_group']}, in the "
              "catalogue's priority order")
    strata = list(dict.fromkeys(c for m in catalogue.items for c in m.strata))
    alike = " and ".join(labels.get(c, c) for c in strata) or "nothing"
    if detail:
        return (chosen + " (conf/measures/). Comparable customers: all customers of the table in "
                f"the same strata of the measure's columns ({alike}; banded where edges are "
                "given), not only the group's members. In each stratum holding members the churn "
                "of those who already behave as the measure aims (exposed) and of those who do "
                "not is weighted by the group's members in it (direct standardisation), and the "
                "Mantel-Haenszel odds ratio with its 95% CI pools the same strata. They chose that "
                "behaviour themselves, so it is an association, not the effect of the measure. "
                f"Pilots: a two-sided test of two proportions (Cohen's h, alpha "
                f"{s['alpha']:g}) sized to see churn fall by {whole_pct(s['relative_reduction'])} "
                f"with {whole_pct(s['power'])} power.")
    return (chosen + f". \"Comparable customers\" are all customers in the table with the same "
            f"{alike} as the group's members (each measure uses the columns it needs), not only "
            "the members themselves: the table compares the churn of those among them who "
            "already do what the measure aims at with those who do not. They chose that "
            "themselves, so the difference is an association, not the effect of the measure. "
            "Only a pilot with a random control group measures the effect; each is sized so "
            f"that {whole_pct(s['power'])} of such pilots would detect churn falling by "
            f"{whole_pct(s['relative_reduction'])}; the appendix gives each in full.")


def what_to_try(customers: pd.DataFrame, target: str, groups: Sequence, catalogue: Catalogue,
                settings: Mapping, driver_ranks: Mapping[str, int],
                labels: Mapping[str, str] | None = None, detail: bool = False) -> Section:
    """Section "What to try": per target group its measures, what the data shows for each
    within comparable customers, and a pilot, as one table (the main part); with `detail`, the
    same in full sentences (the appendix). The figures are in `numbers`."""
    labels = labels or {}
    s = check_pilot(settings)
    results = group_measures(customers, target, groups, catalogue, s)
    section = Section("measures_detail" if detail else "measures",
                      "Measures in detail" if detail else "What to try")
    section.say(_intro(s, catalogue, labels, detail))
    rows = []
    for g in results:
        if not g["members"]:
            section.say(f"For {g['group']}: the customer table holds none of its members.")
            continue
        head = f"For {g['group']} ({g['active']:,} active now, churn {whole_pct(g['churn'])})"
        if not g["measures"]:
            section.say(f"{head}: no measure in the catalogue is for at least "
                        f"{whole_pct(s['min_for_share'])} of its members; the default applies: "
                        f"{catalogue.default_action}.")
        for m in g["measures"]:
            rank = driver_ranks.get(m["driver"]) if m["driver"] else None
            # Rules: the driver is named when it ranks among the drivers; how many the measure
            # is for is named when that is not every active member.
            driver = (f" Driver behind it: {labels.get(m['driver'], m['driver'])} (#{rank} among "
                      "the churn drivers)." if rank is not None else "")
            part = f" (for {m['for_now']:,} of them now)" if m["for_now"] != g["active"] else ""
            if detail:
                section.say(f"{head}: {m['action']}{part}.{driver} "
                            f"{data_sentence(m, labels)} {pilot_sentence(m)}")
            p = m["pilot"] or {}
            driver_name = labels.get(m["driver"], m["driver"]) if m["driver"] else "-"
            rows.append({"group": g["group"], "measure": m["name"],
                         "driver (rank)": (f"{driver_name} (#{rank})" if rank is not None
                                           else driver_name),
                         "for how many now": m["for_now"],
                         "comparable customers: churn of those who do vs not": _shows_cell(m),
                         "pilot: per arm": p.get("per_arm", "-"),
                         "pilot: months": _months_cell(p)})
    if rows and not detail:
        section.table(f"Measures per target group: churn of comparable customers who already do "
                      f"what the measure aims at against those who do not, and a pilot sized to "
                      f"detect churn falling by {whole_pct(s['relative_reduction'])}.",
                      frame_of(rows))
    section.numbers["groups"] = results
    section.numbers["pilot_settings"] = s
    return section
