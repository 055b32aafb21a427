"""Section 5, recommendations: target groups (segment x risk band), model-based what-ifs for
the flagged customers, other patterns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gymchurn.churn.score import band_index
from gymchurn.reporting.blocks import Section, frame_of, pct


@dataclass
class ScoredTable:
    """Every customer of the table with the churn model's probability and risk band cuts."""

    pipeline: object
    threshold: float
    customers: pd.DataFrame
    target: str
    features: Sequence[str]
    proba: np.ndarray           # the churn model's probability for each row of `customers`
    bands: Sequence[str]
    cuts: np.ndarray


@dataclass
class Rules:
    """conf/report.yaml's settings for this section."""

    scenarios: Sequence[Mapping] = field(default_factory=list)  # the what-ifs
    n_groups: int = 3
    min_drop: float = 0.05
    negligible: float = 0.002


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


def recommendations(scored: ScoredTable, labels, names: Mapping[int, str],
                    permutation: Mapping[str, float], strong_pairs: Sequence,
                    rules: Rules) -> Section:
    """`labels`/`names`: each customer's segment and the segments' names; `permutation`:
    feature -> permutation importance, largest first; `strong_pairs`: (a, b, r) near duplicates."""
    section = Section("recommendations", "The model's what-ifs and other patterns")
    pipeline, threshold, customers, target = (scored.pipeline, scored.threshold, scored.customers,
                                              scored.target)
    features, proba, bands, cuts = scored.features, scored.proba, scored.bands, scored.cuts
    scenarios, n_groups, min_drop, negligible = (rules.scenarios, rules.n_groups, rules.min_drop,
                                                 rules.negligible)
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
