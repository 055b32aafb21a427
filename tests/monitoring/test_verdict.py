"""The verdict follows conf/monitor.yaml's rules and names the rule that fired."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from gymchurn.config import compose_config
from gymchurn.errors import GymchurnError
from gymchurn.monitoring.drift import DriftThresholds
from gymchurn.monitoring.verdict import Facts, check_rules, judge

MONITOR = compose_config("monitor", ["input=x.csv"])
LIMITS = DriftThresholds.from_config(MONITOR.drift)


@pytest.fixture(scope="module")
def rules():
    return OmegaConf.to_container(MONITOR.rules)


def features(**status) -> pd.DataFrame:
    names = ["Lifetime", "Contract_period", "Age", "Phone"]
    return pd.DataFrame({"feature": names, "importance_rank": [1, 2, 3, 4],
                         "psi": [0.3 if status.get(n) == "drift" else 0.01 for n in names],
                         "out_of_range": [0.0] * 4,
                         "status": [status.get(n, "ok") for n in names]})


def facts(performance=None, observed=None, **status) -> Facts:
    return Facts(1000, features(**status), {"status": "ok", "psi": 0.01, "then": 0.2, "now": 0.2},
                 250.0, 13.0, LIMITS, performance, observed)


def performance(auc: float) -> pd.DataFrame:
    rows = {m: {"value": 0.8, "expected_low": 0.7, "expected_high": 0.9, "holdout": 0.8}
            for m in ("recall", "capture")}
    rows["roc_auc"] = {"value": auc, "expected_low": 0.95, "expected_high": 0.98, "holdout": 0.965}
    return pd.DataFrame(rows).T


def test_nothing_fires_on_a_quiet_month(rules):
    assert judge(facts(), rules) == ("ok", [])


def test_a_drifted_unimportant_feature_is_watch_and_an_important_one_retrain(rules):
    verdict, findings = judge(facts(Phone="drift"), rules)
    assert verdict == "watch" and [f.rule for f in findings] == ["feature_drift"]
    verdict, findings = judge(facts(Lifetime="drift"), rules)
    assert verdict == "retrain"
    assert findings[0].rule == "important_feature_drift" and "Lifetime (PSI 0.30)" in findings[0].reason


def test_realised_auc_below_the_expected_range_by_the_margin_is_retrain(rules):
    assert judge(facts(performance(0.94), observed=250), rules)[0] == "ok"  # within the margin
    verdict, findings = judge(facts(performance(0.90), observed=250), rules)
    assert verdict == "retrain"
    assert findings[0].rule == "realised_auc_below_expected"
    assert "0.900" in findings[0].reason and "0.950" in findings[0].reason


def test_more_leavers_than_the_probabilities_say_is_watch(rules):
    verdict, findings = judge(facts(performance(0.96), observed=340), rules)
    assert verdict == "watch" and findings[0].rule == "leavers_off_prediction"
    assert "340 customers left against 250 expected" in findings[0].reason


def test_a_rule_set_off_never_fires(rules):
    rules = {**rules, "important_feature_drift": {**rules["important_feature_drift"], "verdict": "off"}}
    verdict, findings = judge(facts(Lifetime="drift"), rules)
    assert verdict == "watch" and "important_feature_drift" not in {f.rule for f in findings}


@pytest.mark.parametrize("change, message", [
    ({"no_such_rule": {"verdict": "watch"}}, "monitor rule 'no_such_rule' is unknown"),
    ({"feature_drift": {"verdict": "panic", "count": 1}}, "rules.feature_drift.verdict must be one of"),
    ({"feature_drift": {"verdict": "watch"}}, "rules.feature_drift.count must be a number"),
    ({"feature_drift": {"verdict": "watch", "count": "two"}}, "rules.feature_drift.count must be a number"),
])
def test_a_bad_rule_is_refused_with_its_name(rules, change, message):
    with pytest.raises(GymchurnError, match=message):
        check_rules({**rules, **change})


def test_a_moved_segment_mix_is_watch_and_a_steady_one_is_not(rules):
    from gymchurn.monitoring.month import segment_table
    from gymchurn.monitoring.reference import segment_reference

    fitted = segment_reference(np.repeat([0, 1, 2], [500, 300, 200]))
    assert fitted["shares"] == {"0": 0.5, "1": 0.3, "2": 0.2}
    for counts, fires in (([250, 150, 100], False), ([100, 150, 250], True)):
        ids = sum(([s] * c for s, c in enumerate(counts)), [])
        segments = pd.DataFrame({"segment": ids, "segment_name": [f"s{i}" for i in ids]})
        table, mix = segment_table(segments, fitted)
        assert table["then"].tolist() == [0.5, 0.3, 0.2]
        f = facts()
        f.segment_mix = mix
        assert ("segment_mix_shift" in {x.rule for x in judge(f, rules)[1]}) is fires


def test_values_training_never_saw_are_watch_from_the_configured_share(rules):
    f = facts()
    watch = LIMITS.out_of_range_watch
    f.features.loc[f.features["feature"] == "Age", "out_of_range"] = watch / 2
    assert judge(f, rules) == ("ok", [])
    f.features.loc[f.features["feature"] == "Age", "out_of_range"] = watch
    verdict, findings = judge(f, rules)
    assert verdict == "watch" and [x.rule for x in findings] == ["out_of_range"]
    assert findings[0].reason == f"values training never saw: Age {watch:.1%}"
