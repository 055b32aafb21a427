"""The report's core: the registered models and the customer table -> the five sections.

Reads `@champion` of the churn classifier and of the segmentation (else their newest versions,
saying so), draws the classifier's own holdout again, and builds each section from plain
inputs. Returns the sections and what they were built from; rendering and logging are the
entrypoint's (`gymchurn.report`).
"""

from __future__ import annotations

import time

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gymchurn.churn.score import band_cuts
from gymchurn.data import feature_columns, load_customers, split_holdout, table_digest
from gymchurn.errors import GymchurnError
from gymchurn.registry import (
    alias_or_newest,
    describe_version,
    load_fitted_pipeline,
    load_version,
)
from gymchurn.reporting.blocks import Section
from gymchurn.reporting.capacity import check_shares
from gymchurn.reporting.drivers import churn_drivers, permutation_table
from gymchurn.reporting.economics import Assumptions
from gymchurn.reporting.groups import target_groups
from gymchurn.reporting.overview import data_overview, strong_pairs
from gymchurn.reporting.performance import model_performance
from gymchurn.reporting.portraits import customer_portraits
from gymchurn.reporting.recommendations import Rules, ScoredTable, recommendations
from gymchurn.segments.model import assign_segments


def find_model(name: str, alias: str, kind: str, command: str):
    """(ModelVersion, how it was chosen), or an error saying which command registers one."""
    try:
        return alias_or_newest(name, (alias,))
    except GymchurnError as err:
        raise GymchurnError(
            f"the report needs a registered {kind} ('{name}') and there is none: run `{command}` "
            f"first. ({err})"
        ) from None


def check_scenarios(cfg: DictConfig) -> None:
    """Each what-if sets known columns to values conf/data/gym.yaml allows; the campaign sizes
    are fractions."""
    from gymchurn.churn.actions import load_catalogue
    from gymchurn.reporting.measures import check_pilot

    check_shares(cfg.capacity_shares)
    Assumptions.from_config(OmegaConf.to_container(cfg.economics, resolve=True))
    load_catalogue(OmegaConf.to_container(cfg.measures, resolve=True))
    check_pilot(OmegaConf.to_container(cfg.pilot, resolve=True))
    columns = cfg.data.columns
    for scenario in cfg.what_if:
        for column, value in scenario.set.items():
            rule = columns.get(column)
            allowed = rule is not None and column != cfg.data.target and (
                value in rule["values"] if rule.get("values") else rule.min <= value <= rule.max)
            if not allowed:
                raise GymchurnError(
                    f"what-if '{scenario.name}' sets {column}={value}, which the data rules do not "
                    "allow (conf/data/gym.yaml). Fix `what_if` in conf/report.yaml."
                )


def holdout_split(cfg: DictConfig, df: pd.DataFrame, version, digest: str):
    """The classifier version's own holdout (its recorded split seed and size) and a note."""
    tags = version.tags or {}
    seed = int(tags.get("split_seed", cfg.holdout.seed))
    size = float(tags.get("test_size", cfg.holdout.test_size))
    _, X_test, _, y_test = split_holdout(df, cfg.data, size, seed)
    if tags.get("data_digest") == digest and "split_seed" in tags:
        note = (f"Its holdout is re-drawn exactly as in training (split seed {seed}, "
                f"{size:.0%} of the table): customers the model never saw.")
    else:
        note = (f"It was trained on another table or did not record its split, so this holdout "
                f"(split seed {seed}, {size:.0%}) may include customers it trained on: read its "
                "metrics as optimistic.")
    return X_test, y_test, note


def family_runs(version, digest: str) -> pd.DataFrame | None:
    """Each family's best run (by CV) on this table, from the champion's MLflow experiment."""
    import mlflow

    from gymchurn.churn.leaderboard import leaderboard

    run_id = (version.tags or {}).get("run_id") or version.run_id
    if not run_id:
        return None
    run = mlflow.get_run(run_id)
    # The champion's split: other runs' holdout figures are comparable only on the same one.
    split = {key: run.data.params[key] for key in ("test_size", "split_seed", "cv_folds")
             if key in run.data.params}
    return leaderboard(run.info.experiment_id, digest, run.data.tags.get("tuned_metric", "roc_auc"),
                       split)


def segment_labels(name: str, version, customers: pd.DataFrame, columns) -> tuple:
    """(labels, names, clustered columns, rules) of the segmentation version for every
    customer; rules: segment -> its rule in words, from the version's tags (none for versions
    registered before segments were rules)."""
    assigned = assign_segments(load_version(name, version.version), customers[columns])
    names = dict(zip(assigned["segment"].astype(int), assigned["segment_name"], strict=True))
    tags = version.tags or {}
    clustered = [c for c in tags.get("clustered_columns", "").split(",") if c]
    rules = {s: tags[f"segment_{s}_rule"] for s in names if f"segment_{s}_rule" in tags}
    return assigned["segment"].to_numpy(), names, clustered, rules


def version_label(version, how: str) -> str:
    """"gym-churn-classifier version 3 (lgbm/engineered, @champion)": one alias, the one used."""
    tags = version.tags or {}
    what = "/".join(tags[k] for k in ("model_family", "feature_set") if k in tags)
    return f"{version.name} version {version.version} ({', '.join(filter(None, (what, how)))})"


def threshold_note(threshold: float, rule: str | None, assumptions: Assumptions, oof_active,
                   ) -> tuple[str, int]:
    """Which threshold the flag uses and why, and from which risk a call pays (economics), in
    words; and how many active customers a call pays for. Probabilities are shown with one
    decimal so that a filter typed from the text selects the same customers."""
    pays_from = assumptions.break_even_probability()
    why = {"f1": "the cut-off that best balances leavers found against needless calls",
           "cost": f"the risk from which a call pays in the {assumptions.middle} scenario"}.get(
        rule or "", "its training run did not record how it was chosen")
    above = int((oof_active >= pays_from).sum())
    return (f"**Which threshold.** \"At risk\" means a churn probability of at least "
            f"{100 * threshold:.1f}%, the churn model's own cut-off ({why}). In the "
            f"{assumptions.middle} scenario a call pays from a probability of {100 * pays_from:.1f}% "
            f"(the offer's cost over what the measure is expected to keep): {above:,} of the "
            f"{len(oof_active):,} active customers reach it; call them first."), above


def threshold_rule(version) -> str | None:
    """The rule behind the version's threshold: its tag, else its training run's parameter
    (versions registered before the tag existed), else None."""
    rule = (version.tags or {}).get("threshold_rule")
    if rule is None and version.run_id:
        import mlflow

        rule = mlflow.get_run(version.run_id).data.params.get("threshold_rule")
    return rule


def build_sections(cfg: DictConfig, printer=print) -> tuple[list[Section], dict]:
    """Every section of the report, and what it was built from (the registry must be open):
    page one, the main part for the department, then the technical appendix."""
    from gymchurn.churn.actions import check_catalogue, load_catalogue
    from gymchurn.churn.out_of_fold import out_of_fold
    from gymchurn.features import BehaviourChangeFeatures
    from gymchurn.reporting.call_list import call_list_table, who_to_call
    from gymchurn.reporting.capacity import campaign_section
    from gymchurn.reporting.caveats import calibration_table_block, caveats
    from gymchurn.reporting.measures import check_pilot, what_to_try
    from gymchurn.reporting.summary import PageOne, page_one, target_group_table

    check_scenarios(cfg)
    churn_version, churn_how = find_model(cfg.classifier, cfg.alias, "churn model",
                                          "make experiment")
    segment_version, segment_how = find_model(cfg.segmentation, cfg.alias, "segmentation",
                                              "make segment")
    for version, how in ((churn_version, churn_how), (segment_version, segment_how)):
        printer(f"using {describe_version(version)}: {how}")

    df, _ = load_customers(cfg.data)
    catalogue = load_catalogue(OmegaConf.to_container(cfg.measures, resolve=True))
    check_catalogue(catalogue, df)
    pilot = check_pilot(OmegaConf.to_container(cfg.pilot, resolve=True))
    assumptions = Assumptions.from_config(OmegaConf.to_container(cfg.economics, resolve=True))
    digest = table_digest(df)
    target, columns = cfg.data.target, feature_columns(cfg.data)
    y = df[target].to_numpy()
    active = y == 0  # in this table the customers who stayed stand for the still-active ones
    pipeline, threshold = load_fitted_pipeline(cfg.classifier, churn_version.version)
    X_test, y_test, holdout_note = holdout_split(cfg, df, churn_version, digest)
    labels, names, clustered, rules = segment_labels(cfg.segmentation, segment_version, df, columns)
    phrases = OmegaConf.to_container(cfg.data.phrases) if "phrases" in cfg.data else {}
    plain = OmegaConf.to_container(cfg.data.labels) if "labels" in cfg.data else {}
    data_columns = OmegaConf.to_container(cfg.data.columns)
    bands, cuts = band_cuts(cfg.risk_bands, threshold)
    champion = version_label(churn_version, churn_how)

    timed = time.monotonic()

    def done(section: Section, appendix: bool = False) -> Section:
        nonlocal timed
        printer(f"  {section.title:<40} {time.monotonic() - timed:5.1f} s")
        timed = time.monotonic()
        section.appendix = appendix
        return section

    negative = (OmegaConf.to_container(cfg.data.negative_labels)
                if "negative_labels" in cfg.data else {})
    oof = out_of_fold(pipeline, df[columns], df[target], int(cfg.out_of_fold.folds), int(cfg.seed),
                      reason_rows=active, labels=plain, negative_labels=negative)
    printer(f"  {'out-of-fold scores':<40} {time.monotonic() - timed:5.1f} s")
    timed = time.monotonic()
    proba = pipeline.predict_proba(df[columns])[:, 1]  # in-sample: the appendix's what-ifs
    proba_test = pipeline.predict_proba(X_test)[:, 1]
    permutation = permutation_table(pipeline, X_test, y_test, int(cfg.permutation_repeats),
                                    int(cfg.seed))
    drivers = done(churn_drivers(pipeline, X_test, df, target, data_columns, phrases,
                                 OmegaConf.to_container(cfg.patterns), permutation,
                                 int(cfg.top_drivers), int(cfg.seed), plain,
                                 BehaviourChangeFeatures.definitions), appendix=True)
    ranks = {c: i + 1 for i, c in enumerate(drivers.numbers["top_drivers"])}
    note, worth_calling = threshold_note(threshold, threshold_rule(churn_version), assumptions,
                                         oof.proba[active])
    calls = call_list_table(df, target, oof, threshold, labels, names, catalogue)
    call = done(who_to_call(calls, threshold, note, int(cfg.call_list_show)))
    # Rule: a built feature named in the call list's reasons is defined under it.
    reasons_text = " ".join(r for r in calls[[c for c in calls if c.startswith("reason_")]]
                            .to_numpy(dtype=object).ravel() if isinstance(r, str))
    named = [c for c in BehaviourChangeFeatures.definitions if plain.get(c, c) in reasons_text]
    if named:
        call.say("Built from the columns: " + "; ".join(
            f"{plain.get(c, c)} is {BehaviourChangeFeatures.definitions[c]}" for c in named) + ".")
    campaign = done(campaign_section(y_test, proba_test, list(cfg.capacity_shares), assumptions))
    groups = done(target_groups(df, target, columns, data_columns, plain, phrases,
                                OmegaConf.to_container(cfg.groups), int(cfg.seed),
                                int(cfg.target_groups)))
    rule_groups = groups.numbers["rule_groups"]
    chosen = rule_groups[rule_groups["churn_rate"] > y.mean()].head(int(cfg.target_groups))
    group_list = [(f"G{i + 1}", r.members, r.members & active)  # G1..: named on page one
                  for i, r in enumerate(chosen.itertuples(index=False))]
    measures = done(what_to_try(df, target, group_list, catalogue, pilot, ranks, plain))
    measure_details = done(what_to_try(df, target, group_list, catalogue, pilot, ranks, plain,
                                       detail=True), appendix=True)
    first_actions = [g["measures"][0]["action"] if g["measures"] else catalogue.default_action
                     for g in measures.numbers["groups"]]
    targets = target_group_table(chosen, y, oof.proba, first_actions, assumptions,
                                 int(cfg.target_groups))
    # The visits column's rank among the drivers, counting the features built from it.
    visits_rank = min((ranks[c] for c in [cfg.caveats.visits_now,
                                          *cfg.caveats.built_from_visits_now] if c in ranks),
                      default=None)
    warnings = done(caveats(pipeline, df, columns, target, oof.proba, oof.fold,
                            OmegaConf.to_container(cfg.caveats), plain, visits_rank))
    summary = page_one(PageOne(
        n_customers=len(df), n_left=int(y.sum()), first_month=groups.numbers["first_month"],
        settled=groups.numbers["settled"], settled_month=int(cfg.groups.cohort_months) + 1,
        # An engineered feature is defined where page one first names it.
        drivers=[plain.get(c, c) + (f" ({BehaviourChangeFeatures.definitions[c]})"
                                    if c in BehaviourChangeFeatures.definitions else "")
                 for c in drivers.numbers["top_drivers"]],
        gains=campaign.numbers["gains"], middle=assumptions.middle,
        best_share=campaign.numbers["best_share"], best_kept=campaign.numbers["best_kept"],
        best_net=campaign.numbers["best_net"],
        break_even_keep_rate=campaign.numbers["break_even_keep_rate"],
        active=int(active.sum()), at_risk=int(call.numbers["at_risk"]),
        worth_calling=worth_calling, groups=targets, caveats=warnings.numbers["short"],
        currency=assumptions.currency))

    overview = done(data_overview(df, target, data_columns, float(cfg.strong_correlation)), True)
    model = done(model_performance(pipeline, threshold, X_test, y_test, proba, champion,
                                   holdout_note, family_runs(churn_version, digest)), True)
    calibration_table_block(model, warnings.numbers["calibration"])
    portraits = done(customer_portraits(
        df, target, labels, names, clustered, phrases, version_label(segment_version, segment_how),
        int(cfg.portrait_features), rules, OmegaConf.to_container(cfg.data.get("portrait") or {}),
        catalogue), True)
    what_ifs = done(recommendations(
        ScoredTable(pipeline, threshold, df, target, columns, proba, bands, cuts), labels, names,
        dict(zip(permutation["feature"], permutation["importance_mean"], strict=True)),
        strong_pairs(df, columns, float(cfg.strong_correlation)),
        Rules(OmegaConf.to_container(cfg.what_if), int(cfg.target_groups), float(cfg.min_drop),
              float(cfg.negligible_importance))), True)
    sections = [summary, call, campaign, groups, measures, warnings,
                overview, model, drivers, portraits, measure_details, what_ifs]
    sources = {
        "classifier": champion,
        "segmentation": version_label(segment_version, segment_how),
        "classifier_version": churn_version.version, "segmentation_version": segment_version.version,
        "data_digest": digest, "n_customers": len(df),
    }
    return sections, sources
