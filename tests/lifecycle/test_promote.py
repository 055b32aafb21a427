"""Promotion gate, forced promotion and rollback against a temp registry (see tests/lifecycle/helpers.py)."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.model_selection import train_test_split

from gymchurn.churn.evaluate import classification_metrics
from gymchurn.config import compose_config
from gymchurn.data import feature_columns, load_customers
from gymchurn.errors import GymchurnError
from gymchurn.promote import run
from gymchurn.registry import load_fitted_pipeline
from tests.lifecycle.helpers import (
    CLASSIFIER,
    SEGMENTATION,
    aliases,
    check_concurrent_runs,
    copy_store,
    lose_model_files,
    register_segmentation,
    registry_snapshot,
    run_modules,
    set_aliases,
    start_aliases,
    trained_store,
)

GATE = f"gates.{CLASSIFIER}"


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    """Overrides pointing at a private copy of the trained registry (versions 1-3)."""
    overrides = copy_store(trained_store(tmp_path_factory), tmp_path)
    mlflow.set_tracking_uri(overrides[-1].split("=", 1)[1])
    return overrides


def promote(store, *overrides):
    lines = []
    cfg = compose_config("promote", overrides=[*store, *overrides])
    result = run(cfg, printer=lines.append)
    return result, "\n".join(lines)


def version_tags(version):
    return MlflowClient().get_model_version(CLASSIFIER, str(version)).tags


def promotion_runs():
    experiment = MlflowClient().get_experiment_by_name("gym-churn-promotion")
    return MlflowClient().search_runs([experiment.experiment_id]) if experiment else []


def test_first_version_becomes_champion_and_the_decision_is_recorded(store):
    result, out = promote(store)
    assert result["decision"] == "promoted"
    assert aliases()["champion"] == "3" == aliases()["challenger"]
    assert "previous-champion" not in aliases()
    tags = version_tags(3)
    assert tags["promotion.decision"] == "promoted" and "no champion yet" in tags["promotion.reason"]
    assert tags["promotion.by"] and tags["promotion.time"].startswith("20")
    [record] = promotion_runs()
    assert record.info.run_id == tags["promotion.run_id"] == result["run_id"]
    assert record.data.tags["decision"] == "promoted" and record.data.tags["candidate_version"] == "3"
    assert "PROMOTED" in out


def test_gate_on_the_same_holdout_compares_recorded_metrics(store):
    promote(store, "version=1", "force=true")  # champion v1 (lgbm), split seed 42
    set_aliases(challenger=2)                    # logreg, same data and split seed
    v1, v2 = version_tags(1), version_tags(2)
    gain = float(v2["test_roc_auc"]) - float(v1["test_roc_auc"])

    result, out = promote(store, f"{GATE}.margin={gain + 0.01}")  # one point short of the margin
    comparison = result["comparison"]
    assert comparison.basis.startswith("same basis") and "re-scored" not in comparison.basis
    assert comparison.metrics["challenger"]["roc_auc"] == pytest.approx(float(v2["test_roc_auc"]))
    assert comparison.metrics["champion"]["roc_auc"] == pytest.approx(float(v1["test_roc_auc"]))
    assert result["decision"] == "rejected" and aliases()["champion"] == "1"
    assert version_tags(2)["promotion.decision"] == "rejected"
    assert float(version_tags(2)["promotion.champion_roc_auc"]) == pytest.approx(
        float(v1["test_roc_auc"]), abs=1e-6)
    assert "challenger v2" in out and "champion v1" in out and "REJECTED" in out

    result, _ = promote(store, f"{GATE}.margin={gain - 0.01}")  # now it clears the margin
    assert result["decision"] == "promoted"
    assert aliases()["champion"] == "2" and aliases()["previous-champion"] == "1"
    assert version_tags(1)["promotion.replaced_by"] == "v2"
    assert [r.data.tags["decision"] for r in promotion_runs()].count("rejected") == 1


def test_different_holdouts_are_rescored_on_one_fixed_holdout(store):
    promote(store, "version=1", "force=true")  # v1: split seed 42; challenger v3: split seed 7
    result, out = promote(store)
    comparison = result["comparison"]
    assert comparison.basis.startswith("re-scored")
    assert any("may be in its training data" in n for n in comparison.notes)

    # The same numbers, computed independently on the configured holdout.
    cfg = compose_config("promote", overrides=store)
    df, _ = load_customers(cfg.data)
    _, X, _, y = train_test_split(df[feature_columns(cfg.data)], df["Churn"], test_size=0.2,
                                  stratify=df["Churn"], random_state=42)
    for role, version in (("challenger", 3), ("champion", 1)):
        pipeline, threshold = load_fitted_pipeline(CLASSIFIER, version)
        expected = classification_metrics(y, pipeline.predict_proba(X)[:, 1], threshold)
        assert comparison.metrics[role]["roc_auc"] == pytest.approx(expected["roc_auc"])
        assert comparison.metrics[role]["f1"] == pytest.approx(expected["f1"])
    # The recorded holdout metric of v3 is not what was compared.
    assert comparison.metrics["challenger"]["roc_auc"] != pytest.approx(
        float(version_tags(3)["test_roc_auc"]), abs=1e-9)
    assert "fixed holdout: 120 customers" in out


def test_forced_promotion_is_recorded_and_rollback_undoes_it(store):
    promote(store, "version=1", "force=true")
    result, out = promote(store, "version=2", "force=true", f"{GATE}.margin=1.0",
                          "reason=needed_for_a_demo")
    assert result["decision"] == "forced" and "FORCED" in out
    assert aliases()["champion"] == "2" and aliases()["previous-champion"] == "1"
    tags = version_tags(2)
    assert tags["promotion.decision"] == "forced" and tags["promotion.note"] == "needed_for_a_demo"
    assert "fails" in tags["promotion.reason"]  # the gate's verdict is kept in the record
    forced = [r for r in promotion_runs() if r.data.tags["decision"] == "forced"]
    assert len(forced) == 2 and all(r.data.tags["forced"] == "true" for r in forced)

    result, _ = promote(store, "action=rollback")
    assert aliases()["champion"] == "1" and aliases()["previous-champion"] == "2"
    result, _ = promote(store, "action=rollback")  # a second rollback undoes the first
    assert aliases()["champion"] == "2" and aliases()["previous-champion"] == "1"
    assert [r.data.tags["decision"] for r in promotion_runs()].count("rollback") == 2
    # Each version's promotion.* tags describe its last decision only (review: a rollback left
    # the forced promotion's note and another decision's metrics beside its own)
    tags = {k: v for k, v in version_tags(2).items() if k.startswith("promotion.")}
    assert tags["promotion.decision"] == "rollback" and "promotion.note" not in tags
    assert tags["promotion.run_id"] == promotion_runs()[0].info.run_id  # the newest run
    assert "promotion.replaced_by" not in tags  # it is the champion again
    assert version_tags(1)["promotion.replaced_by"] == "v2"


def test_segmentation_gate_uses_churn_range_and_portrait_minimums(store, customers):
    basis = {"data_digest": "d" * 64, "clustered_columns": "all"}
    usable = {"rule_fidelity_min": "1.0", "distinct_columns_min": "3", "stability_ari_mean": "0.95"}
    register_segmentation(customers, 3, {**basis, **usable, "churn_range": "0.40"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["decision"] == "promoted"
    # Better churn separation, but rules that miss their segments: not portraits to act on.
    register_segmentation(customers, 4, {**basis, **usable, "churn_range": "0.60",
                                         "rule_fidelity_min": "0.56"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["decision"] == "rejected" and "rule_fidelity_min" in result["reason"]
    register_segmentation(customers, 4, {**basis, **usable, "churn_range": "0.60",
                                         "distinct_columns_min": "2"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["decision"] == "rejected" and "distinct_columns_min" in result["reason"]
    register_segmentation(customers, 4, {**basis, **usable, "churn_range": "0.41"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["decision"] == "rejected" and "churn_range" in result["reason"]  # < margin
    register_segmentation(customers, 4, {**basis, **usable, "churn_range": "0.60"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["decision"] == "promoted"
    assert str(MlflowClient().get_registered_model(SEGMENTATION).aliases["champion"]) == "5"

    # Another table: churn ranges and distinctness are re-measured on the fixed holdout.
    register_segmentation(customers, 2, {**usable, "data_digest": "e" * 64, "churn_range": "0.99"})
    result, _ = promote(store, f"model_name={SEGMENTATION}")
    assert result["comparison"].basis.startswith("re-scored")
    measured = result["comparison"].metrics["challenger"]
    assert measured["churn_range"] < 0.99 and measured["n_segments"] == 2
    assert measured["rule_fidelity_min"] == 1.0  # recorded: it needs the clusters


BAD_REQUESTS = [
    (["model_name=gym-churn-nope"], "no registered model named 'gym-churn-nope'"),
    (["version=99"], "has no version 99"),
    (["force=true"], "force=true needs the version"),
    (["action=rollback"], "no @previous-champion"),
    (["action=demote"], "action=demote is not an option"),
    (["model_name=gym-churn-segmentation"], "no registered model named 'gym-churn-segmentation'"),
]


def test_bad_requests_exit_with_one_message_and_change_nothing(store):
    uri = store[-1].split("=", 1)[1]
    before = registry_snapshot(uri)
    runs = run_modules("gymchurn.promote", [[*store, *overrides] for overrides, _ in BAD_REQUESTS])
    for (overrides, message), done in zip(BAD_REQUESTS, runs, strict=True):
        assert done.returncode == 2, (overrides, done.stdout + done.stderr)
        assert done.stderr.startswith("error: ") and message in done.stderr, (overrides, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert registry_snapshot(uri) == before
    assert mlflow.MlflowClient().get_experiment_by_name("gym-churn-promotion") is None


def test_promote_without_a_challenger_names_the_aliases(store):
    MlflowClient().delete_registered_model_alias(CLASSIFIER, "challenger")
    with pytest.raises(GymchurnError, match="no version with alias @challenger"):
        promote(store)


# ---------------------------------------------------------------- two users, two terminals


@pytest.mark.slow
def test_promotions_and_a_rollback_at_once_keep_every_decision(store):
    # The issue: two forced promotions started together both said so, one was lost and
    # @previous-champion pointed at the wrong version.
    start = start_aliases(champion=1, previous_champion=2)
    done = run_modules("gymchurn.promote", [
        [*store, "version=2", "force=true", "user=alice"],
        [*store, "version=3", "force=true", "user=bob"],
        [*store, "action=rollback", "user=carol"],
    ])
    check_concurrent_runs(done, store[-1].split("=", 1)[1], start)


# The same through a tracking server: tests/lifecycle/test_serve.py (one server start serves
# that test and `make ui`'s checks).


def hold_lock(expires_in: float, holder: str = "dana@elsewhere pid 42") -> None:
    now = time.time()
    MlflowClient().create_registered_model(f"{CLASSIFIER}.promotion-lock", tags={
        "token": "someone-else", "holder": holder, "since": f"{now:.3f}",
        "expires": f"{now + expires_in:.3f}"})


def test_a_held_lock_makes_promotion_wait_then_fail_naming_the_holder(store):
    before = registry_snapshot(store[-1].split("=", 1)[1])
    hold_lock(expires_in=600)
    started = time.monotonic()
    with pytest.raises(GymchurnError) as info:
        promote(store, "version=2", "force=true", "lock.wait_seconds=1")
    assert time.monotonic() - started >= 1
    message = str(info.value)
    assert "another promotion or rollback of gym-churn-classifier is running" in message
    assert "dana@elsewhere pid 42" in message and "lock.wait_seconds" in message
    with pytest.raises(GymchurnError, match="dana@elsewhere"):
        promote(store, "action=rollback", "lock.wait_seconds=0")
    after = registry_snapshot(store[-1].split("=", 1)[1])
    assert after.pop(f"{CLASSIFIER}.promotion-lock")  # still the other holder's
    assert after == before and promotion_runs() == []
    # The lock is not a model a user can pick.
    with pytest.raises(GymchurnError) as info:
        promote(store, "model_name=nope")
    assert "promotion-lock" not in str(info.value)


def test_a_stale_lock_of_a_dead_process_is_broken(store):
    hold_lock(expires_in=-1)
    result, out = promote(store, "version=2", "force=true", "lock.wait_seconds=0")
    assert result["decision"] == "forced" and aliases()["champion"] == "2"
    assert "breaking the stale promotion lock" in out and "dana@elsewhere" in out
    names = [m.name for m in MlflowClient().search_registered_models()]
    assert names == [CLASSIFIER]


def test_a_lock_without_tags_made_by_hand_is_broken_not_spun_on(store):
    import threading

    MlflowClient().create_registered_model(f"{CLASSIFIER}.promotion-lock")  # no holder, no expiry
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(
        promote(store, "version=2", "force=true", "lock.wait_seconds=5")), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert outcome, "promotion still looping on the lock without tags"
    result, out = outcome[0]
    assert result["decision"] == "forced" and aliases()["champion"] == "2"
    assert "breaking the stale promotion lock" in out


# ---------------------------------------------------------------- a champion whose files are gone


def test_a_champion_without_model_files_gets_one_message_naming_it(store, tmp_path):
    set_aliases(champion=1)
    lose_model_files(tmp_path / "mlflow.db", CLASSIFIER, 1, tmp_path / "deleted")
    # v3 was evaluated on another holdout: both are re-scored, which needs v1's files.
    with pytest.raises(GymchurnError) as info:
        promote(store)
    message = str(info.value)
    assert f"{CLASSIFIER} version 1 @champion is registered but its model files are gone" in message
    assert (tmp_path / "deleted").as_uri() in message and "version=N force=true" in message
    assert "No such artifact" not in message
    assert aliases()["champion"] == "1"
    result, _ = promote(store, "version=3", "force=true")  # the fix the message gives
    assert result["decision"] == "forced" and aliases()["champion"] == "3"
