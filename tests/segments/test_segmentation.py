"""`make segment`: config checks (gymchurn.segments.fit) and the `python -m gymchurn.segment`
entrypoint end to end against a temp MLflow store."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from gymchurn.config import compose_config
from gymchurn.data import make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.segment import run as run_segment
from gymchurn.segments.fit import check_config, column_subsets

SCORE_KEYS = ["silhouette", "n_segments", "davies_bouldin", "calinski_harabasz",
              "min_segment_share", "churn_rate_best_segment", "churn_rate_worst_segment",
              "stability_ari_mean", "stability_ari_std"]


def segment_cfg(store_overrides, *extra):
    """The segmentation config with every output in tmp_path (Hydra keys are for the CLI)."""
    overrides = [o for o in store_overrides if not o.startswith("hydra.")]
    return compose_config("segment", [*overrides, *extra])


# ---------------------------------------------------------------- config checks


@pytest.mark.parametrize("override, message", [
    ("segmentation.column_subsets.contract_tenure=[Contract_period,Churn]", "includes the target"),
    ("segmentation.search=[no_such_subset]", "unknown column subsets"),
    ("segmentation.selection.prefer=davies_bouldin", "must name objectives"),
    ("segmentation.objectives=[silhouette,happiness]", "objectives must be"),
    ("segmentation.constraints.min_segment_share=0.5", "min_segment_share"),
    ("tune.bootstraps=1", "tune.bootstraps"),
])
def test_bad_settings_are_refused_with_the_key_named(store_overrides, override, message):
    cfg = segment_cfg(store_overrides, override)
    with pytest.raises(GymchurnError, match=message):
        check_config(cfg)


def test_default_subsets_never_contain_churn():
    cfg = compose_config("segment", [])
    subsets = column_subsets(cfg)
    assert len(subsets) >= 3 and all("Churn" not in cols for cols in subsets.values())


def test_tune_presets_are_the_segmentation_ones():
    fast = compose_config("segment", ["segment_tune@tune=fast"])
    default = compose_config("segment", [])
    assert fast.tune.n_trials < default.tune.n_trials
    # Churn keys switched off: the segmentation budget (conf/segment_tune/) has no churn metric.
    assert default.tune.bootstraps >= 2 and fast.tune.get("metric") is None
    assert not {"metric", "folds", "pruner"} & (set(fast.tune) | set(default.tune))


# ---------------------------------------------------------------- end to end


def run_entrypoint(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gymchurn.segment", *overrides],
                          capture_output=True, text=True, timeout=600)


E2E = ["segment_tune@tune=fast", "tune.n_trials=5", "tune.n_startup_trials=3", "tune.bootstraps=3",
       "tune.timeout=600", "segmentation.search=[contract_tenure,visits]",
       "segmentation.selection.stability_candidates=1"]


@pytest.mark.slow
def test_entrypoint_tunes_describes_tracks_and_registers(tmp_path, store_overrides, new_mlflow_db):
    done = run_entrypoint(*store_overrides, "clustering=agglomerative", *E2E,
                          "clustering.search_space.n_clusters.high=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trial   5/5" in done.stdout and "gym-churn-segmentation version 1" in done.stdout

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("gym-churn-segmentation")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_id in done.stdout
    assert all("silhouette" in c.data.metrics and "column_subset" in c.data.params
               for c in children if c.data.tags.get("optuna.state") == "COMPLETE")
    missing = [k for k in SCORE_KEYS if k not in parent.data.metrics]
    assert not missing, missing
    n_segments = int(parent.data.metrics["n_segments"])
    assert 3 <= n_segments <= 5
    assert parent.data.params["column_subset"] in ("contract_tenure", "visits")
    assert parent.data.tags["run_type"] == "segmentation"

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"config.yaml", "portraits.csv", "portraits.md", "pareto_front.csv", "trials.csv",
            "selection.csv", "segments.csv"} <= artifacts
    assert {f"plots/{p}.png" for p in ("segment_map", "silhouette", "feature_profile",
                                       "dendrogram", "pareto_front")} <= plots

    version = client.get_model_version_by_alias("gym-churn-segmentation", "challenger")
    assert version.run_id == parent.info.run_id
    assert float(version.tags["silhouette"]) == pytest.approx(parent.data.metrics["silhouette"], abs=1e-6)
    names = {int(k.split("_")[1]): v for k, v in version.tags.items()
             if k.startswith("segment_") and k.split("_")[1].isdigit()}
    assert sorted(names) == list(range(n_segments))
    for segment, name in names.items():  # each name also printed in the summary
        assert name[:42] in done.stdout and parent.data.tags[f"segment_{segment}"] == name

    # The registered model assigns new customers (raw columns) to a segment and its name.
    model = mlflow.pyfunc.load_model("models:/gym-churn-segmentation@challenger")
    new = make_synthetic_customers(40, seed=123).drop(columns="Churn").astype("float64")
    out = model.predict(new)
    assert list(out.columns) == ["segment", "segment_name"] and len(out) == 40
    assert set(out["segment"]) <= set(names)
    assert all(names[s] == n for s, n in zip(out["segment"], out["segment_name"], strict=True))


@pytest.mark.slow
def test_rerun_resumes_the_study_and_keeps_metric_keys(store_overrides):
    cfg = segment_cfg(store_overrides, "clustering=gmm", *E2E,
                      "clustering.search_space.n_components.high=4", "tune.n_trials=3",
                      "tracking.log_trials=false")
    first = run_segment(cfg)
    lines: list[str] = []
    second = run_segment(cfg, printer=lines.append)
    resumed = f"resuming study '{first['study_name']}': 3 of 3 trials already finished"
    assert resumed in lines and second["study_name"] == first["study_name"]
    assert str(second["model_version"]) == "2"
    assert set(SCORE_KEYS) <= set(first["metrics"])  # same keys for every algorithm


def test_user_errors_exit_with_one_line(store_overrides):
    done = run_entrypoint(*store_overrides, "segmentation.search=[nope]")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    assert "nope" in done.stderr and "contract_tenure" in done.stderr  # the bad name and the choices


def test_unknown_clustering_option_names_the_choices():
    with pytest.raises(Exception, match="clustering/nope") as err:
        compose_config("segment", ["clustering=nope"])
    assert "agglomerative" in str(err.value) and "kmeans" in str(err.value)
