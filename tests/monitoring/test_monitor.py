"""`make monitor` end to end: a registered champion (trained with its reference statistics) in a
temp store judges SYNTHETIC months: ok on one drawn like its training data, the moved features
flagged on a shifted one, retrain on one whose outcomes follow another relationship; every bad
input refused before any work, with nothing written; the report self-contained and escaped."""

from __future__ import annotations

import re
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from gymchurn import experiment, monitor
from gymchurn.config import PROJECT_ROOT, compose_config
from gymchurn.data import make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.monitoring import demo
from gymchurn.outputs import MONITORING_MARKER, REPORT_MARKER
from gymchurn.registry import version_model_id
from tests.lifecycle.helpers import register_segmentation

pytestmark = pytest.mark.slow
CLASSIFIER = "gym-churn-classifier"
MONTH = 1500


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store whose @champion (version 1, lgbm on engineered features) was trained, with its
    reference statistics, on 2,000 synthetic customers: a holdout of 400 (the lifecycle tests'
    600-customer store leaves 120, too few leavers to vouch for a recall)."""
    root = tmp_path_factory.mktemp("monitor-store")
    make_synthetic_customers(2000, seed=7).to_csv(root / "customers.csv", index=False)
    overrides = [f"data.path={root / 'customers.csv'}", "data.shared_path=null", "data.url=null",
                 f"tracking.uri=sqlite:///{root}/mlflow.db"]
    experiment.run(compose_config(overrides=[
        *overrides, f"tune.storage=sqlite:///{root}/optuna.db", "tune=fast", "tune.n_trials=2",
        "tune.folds=2", "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1",
        "tracking.log_trials=false"]), printer=lambda line: None)
    mlflow.set_tracking_uri(overrides[-1].split("=", 1)[1])
    MlflowClient().set_registered_model_alias(CLASSIFIER, "champion", "1")
    # A segmentation registered the way versions before monitoring were (no reference shares).
    register_segmentation(pd.read_csv(root / "customers.csv"), 3, {})
    mlflow.set_tracking_uri(None)
    return overrides[-1:]


def month_file(folder, name: str, table: pd.DataFrame):
    path = folder / f"{name}.csv"
    table.to_csv(path, index=False)
    return path


def judge(store, path, out, *extra):
    cfg = compose_config("monitor", [*store, f"input={path}", f"output_dir={out}",
                                     "bootstrap.replicates=100", *extra])
    return monitor.run(cfg, printer=lambda line: None)


@pytest.fixture(scope="module")
def months(store, tmp_path_factory):
    """The three months, each judged once (the tests read the results)."""
    folder = tmp_path_factory.mktemp("months")
    # the champion's customers are make_synthetic_customers(2000, seed=7)
    tables = {"like-training": make_synthetic_customers(MONTH, seed=21),
              "shifted": demo.shifted(MONTH, seed=22),
              "changed": demo.changed_relationship(MONTH, seed=23)}
    return {name: judge(store, month_file(folder, name, table), folder / "out" / name)
            for name, table in tables.items()}


def test_a_month_drawn_like_training_is_ok(months):
    result = months["like-training"]
    assert result["verdict"] == "ok", [f.reason for f in result["findings"]]
    month = result["result"]
    assert set(month.features["status"]) <= {"ok", "watch"}
    assert month.performance.loc["roc_auc", "shortfall"] < 0.02  # the rule's margin


def test_the_shifted_month_flags_the_moved_features(months):
    month = months["shifted"]["result"]
    flagged = set(month.features.loc[month.features["status"] != "ok", "feature"])
    assert {"Contract_period", "Avg_class_frequency_current_month"} <= flagged
    assert not flagged & {"Age", "gender", "Phone", "Partner", "Near_Location"}
    assert month.flagged["now"] > month.flagged["then"]  # more short contracts, fewer visits
    assert not month.has_outcomes and months["shifted"]["verdict"] in ("watch", "retrain")
    # segments from the registered segmentation; it logged no shares, so no mix rule can fire
    assert month.segments["now"].sum() == pytest.approx(1) and month.segments["then"].isna().all()
    assert month.segment_mix is None


def test_a_changed_relationship_is_retrain_by_the_realised_auc(months):
    result = months["changed"]
    assert result["verdict"] == "retrain"
    fired = [f.rule for f in result["findings"]]
    assert "realised_auc_below_expected" in fired
    assert not (result["result"].features["status"] == "drift").any()  # the inputs did not move


def test_the_run_records_the_verdict_and_links_the_judged_version(months, store):
    mlflow.set_tracking_uri(store[0].split("=", 1)[1])
    client = MlflowClient()
    version = client.get_model_version(CLASSIFIER, "1")
    for result in months.values():
        run = client.get_run(result["run_id"])
        assert run.data.tags["verdict"] == result["verdict"]
        assert run.data.tags["model_version"] == "1" and run.data.tags["model_name"] == CLASSIFIER
        assert run.data.metrics["drift.Contract_period.psi"] >= 0
        assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} >= {
            "report/report.html", "report/report.md", "report/feature_drift.csv"}
        assert client.get_experiment(run.info.experiment_id).name == "gym-churn-monitoring"
    linked = client.get_logged_model(version_model_id(version)).metrics or []
    assert {m.run_id for m in linked} >= {r["run_id"] for r in months.values()}
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("name, table", [
    ("shifted", lambda: demo.shifted(MONTH, seed=22)),  # no outcomes: every customer
    ("changed", lambda: demo.changed_relationship(MONTH, seed=23)),  # outcomes: those who stayed
])
def test_the_call_list_ranks_the_members_riskiest_first_and_finds_them_in_the_file(
        months, name, table):
    result, customers = months[name], table()  # the same generator and seed as the fixture
    calls = pd.read_csv(result["folder"] / "call_list.csv")
    members = customers.index[customers["Churn"] == 0] if name == "changed" else customers.index
    assert sorted(calls["customer_row"] - 1) == sorted(members)
    assert "Churn" not in calls.columns
    assert (calls["priority_rank"] == range(1, len(calls) + 1)).all()
    assert calls["churn_probability"].is_monotonic_decreasing
    # each row is the customer of that row of the file, with the probability the month's judge gave
    probability = result["result"].probability[calls["customer_row"] - 1]
    assert calls["churn_probability"].to_numpy() == pytest.approx(probability, abs=5e-4)
    shown = customers.drop(columns="Churn", errors="ignore").iloc[calls["customer_row"] - 1]
    shown = shown.reset_index(drop=True)
    pd.testing.assert_frame_equal(calls[shown.columns], shown, check_dtype=False)
    threshold = result["calls"]["threshold"]
    assert ((calls["at_risk"] == 1) == (probability >= threshold)).all()
    assert calls.loc[calls["at_risk"] == 1, "reason_1"].notna().all()  # reasons for the flagged
    assert calls["suggested_action"].notna().all() and calls["segment_name"].notna().all()
    assert result["calls"]["calls_possible"] == int(0.1 * len(calls))
    md = (result["folder"] / "report.md").read_text()
    assert "Whom to call this month" in md and f"first {int(0.1 * len(calls)):,} on the list" in md


def test_the_report_is_self_contained(months):
    folder = months["changed"]["folder"]
    assert {p.name for p in folder.iterdir()} == {MONITORING_MARKER, "report.html", "report.md",
                                                 "feature_drift.csv", "call_list.csv", "figures"}
    html = (folder / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert html.count('src="data:image/png;base64,') == 3  # drift, scores, calibration
    assert "Verdict: retrain" in html and "realised_auc_below_expected" in html
    assert "has no reference shares" in html  # the segmentation was logged before monitoring


def test_a_call_list_without_reasons(store, tmp_path):
    path = month_file(tmp_path, "m", make_synthetic_customers(100, seed=25).drop(columns="Churn"))
    result = judge(store, path, tmp_path / "out", "reasons=none")
    calls = pd.read_csv(result["folder"] / "call_list.csv")
    assert len(calls) == 100 and calls["reason_1"].isna().all()
    assert calls["churn_probability"].is_monotonic_decreasing


def test_every_value_in_the_report_is_escaped(store, tmp_path):
    table = make_synthetic_customers(200, seed=24)
    table.insert(0, "member_id", [f"00{i}" for i in range(len(table))])  # an id column of text
    path = month_file(tmp_path, "m", table)
    result = judge(store, path, tmp_path / "out", "name='<script>alert(1)</script>'",
                   "note='<img src=x onerror=alert(2)> & more'")
    html = (result["folder"] / "report.html").read_text()
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&amp; more" in html
    md = (result["folder"] / "report.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    calls = pd.read_csv(result["folder"] / "call_list.csv", dtype={"member_id": str})
    stayed = table.loc[table["Churn"] == 0, "member_id"]  # the month has outcomes
    assert set(calls["member_id"]) == set(stayed)  # carried as written: 007 stays 007
    assert (calls["member_id"] == table["member_id"].iloc[calls["customer_row"] - 1].values).all()


BAD_MONTHS = [
    ("missing column", lambda t: t.drop(columns="Lifetime"), "missing column(s)"),
    ("bad values", lambda t: t.assign(Age=t["Age"].astype(float).where(t.index > 2, -5)), "Age"),
    ("one class", lambda t: t.assign(Churn=0), "holds only 0s"),
    ("too few", lambda t: t.head(10), "monitoring needs at least 20"),
]


@pytest.mark.parametrize("case, change, message", BAD_MONTHS, ids=[c[0] for c in BAD_MONTHS])
def test_a_bad_month_is_refused_before_anything_is_written(store, tmp_path, case, change, message):
    path = month_file(tmp_path, "bad", change(make_synthetic_customers(200, seed=25)))
    out = tmp_path / "out"
    mlflow.set_tracking_uri(store[0].split("=", 1)[1])
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(GymchurnError, match=re.escape(message)):
        judge(store, path, out)
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before
    mlflow.set_tracking_uri(None)


def test_a_folder_that_is_not_a_monitoring_report_is_never_replaced(store, tmp_path):
    path = month_file(tmp_path, "m", make_synthetic_customers(100, seed=26))
    for foreign in ("notes", "old-report"):
        out = tmp_path / foreign
        out.mkdir()
        (out / "keep.txt").write_text("someone's")
        if foreign == "old-report":  # a retention report is not a monitoring report
            (out / "keep.txt").unlink()
            (out / REPORT_MARKER).write_text("x")
        with pytest.raises(GymchurnError, match="is a folder that is not a previous monitoring report"):
            judge(store, path, out)
    first = judge(store, path, tmp_path / "mine")["folder"]
    assert judge(store, path, first)["folder"] == first  # its own previous report is replaced


def test_a_version_without_reference_statistics_is_refused_with_the_fix(store, tmp_path):
    from gymchurn.churn.fit import SERVED_MODEL
    from gymchurn.registry import log_pipeline_model, register_version
    from gymchurn.tracking import setup_experiment

    uri = store[0].split("=", 1)[1]
    mlflow.set_tracking_uri(uri)
    pipeline = mlflow.pyfunc.load_model(f"models:/{CLASSIFIER}/1").unwrap_python_model().pipeline
    X = make_synthetic_customers(50, seed=27).drop(columns="Churn")
    output = pd.DataFrame({"churn_probability": pipeline.predict_proba(X.head(5))[:, 1]})
    with mlflow.start_run(experiment_id=setup_experiment({"uri": uri, "artifact_root": None}, "old")):
        info = log_pipeline_model(pipeline, SERVED_MODEL, X.head(5), output, {"threshold": 0.5})
        old = register_version(info.model_uri, CLASSIFIER, {}, None).version
    mlflow.set_tracking_uri(None)
    path = month_file(tmp_path, "m", make_synthetic_customers(100, seed=28))
    with pytest.raises(GymchurnError, match=f"version {old} has no reference statistics"):
        judge(store, path, tmp_path / "out", f"version={old}")
    assert not (tmp_path / "out").exists()


def test_the_command_line_prints_one_error_and_exits_non_zero(store, tmp_path):
    # A bad rule is refused in the options check, before the month is read (the in-process
    # tests above cover the month's own problems, worded by the same code).
    path = month_file(tmp_path, "m", make_synthetic_customers(30, seed=29))
    done = subprocess.run([sys.executable, "-m", "gymchurn.monitor", *store, f"input={path}",
                           f"output_dir={tmp_path / 'out'}", "rules.feature_drift.verdict=panic"],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rules.feature_drift.verdict must be one of" in errors[0], done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, message", [
    ([], "give the month's customers: input="),
    (["input=/no/such/month.csv"], "input file not found: /no/such/month.csv"),
    (["input=month.xlsx"], ".xlsx"),
    (["input=x.csv", "name='///'"], "leaves no usable folder name"),
    (["input=x.csv", "reasons.rows=some"], "reasons.rows=some is not an option"),
    (["input=x.csv", "reasons.method=fast"], "reasons.method=fast is not an option"),
])
def test_options_are_checked_before_anything_is_read(tmp_path, overrides, message):
    if overrides[:1] == ["input=x.csv"]:
        (tmp_path / "x.csv").write_text("a\n1\n")
        overrides = [f"input={tmp_path / 'x.csv'}", *overrides[1:]]
    with pytest.raises(GymchurnError, match=re.escape(message)):
        monitor.check_options(compose_config("monitor", overrides))


def test_the_demo_rewrites_only_its_own_generated_months(tmp_path):
    written = demo.write_demo(tmp_path)
    assert sorted(p.name for p in written) == ["changed-relationship.csv", "history.csv",
                                               "like-training.csv", "shifted.csv"]
    (tmp_path / "history.csv").write_text("an older generator's table\n")
    assert demo.write_demo(tmp_path) == written  # its own files (the marker lists them), rewritten
    assert (tmp_path / "history.csv").read_text().startswith("gender,")
    (tmp_path / demo.MARKER).unlink()  # files from before the marker: their bytes tell
    assert demo.write_demo(tmp_path) == written
    (tmp_path / demo.MARKER).unlink()
    (tmp_path / "shifted.csv").write_text("Churn\n1\n")  # someone's own file of that name
    before = {p: p.stat().st_mtime_ns for p in written}
    refused = r"shifted\.csv: not the months the demo generates, so nothing was written"
    with pytest.raises(GymchurnError, match=refused):
        demo.write_demo(tmp_path)
    assert (tmp_path / "shifted.csv").read_text() == "Churn\n1\n"
    assert {p: p.stat().st_mtime_ns for p in written} == before
