"""`make segment`: config checks (gymchurn.segments.fit) and the `python -m gymchurn.segment`
entrypoint end to end against a temp MLflow store."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from gymchurn.churn.actions import load_catalogue
from gymchurn.config import compose_config
from gymchurn.data import make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.segment import run as run_segment
from gymchurn.segments.fit import check_config, column_subsets
from tests.lifecycle.helpers import predict_elsewhere, unlisted_imports

SCORE_KEYS = ["silhouette", "n_segments", "davies_bouldin", "calinski_harabasz",
              "min_segment_share", "churn_rate_best_segment", "churn_rate_worst_segment",
              "stability_ari_mean", "stability_ari_std", "rule_fidelity_min",
              "distinct_columns_min", "max_conditions", "correlated_input_pairs",
              "cluster_silhouette", "rule_spread_increase"]


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
    ("segmentation.log_columns=[Tenure]", "log_columns names unknown columns"),
    ("+segmentation.selection.require.distinct_columns=3", "must name objectives"),
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
       "tune.timeout=600",
       "segmentation.search=[contract_tenure,tenure_groups_referral,contract_tenure_partner]",
       "segmentation.selection.stability_candidates=1"]


@pytest.mark.slow
def test_entrypoint_tunes_describes_tracks_and_registers(tmp_path, store_overrides, new_mlflow_db,
                                                        customers):
    done = run_entrypoint(*store_overrides, "clustering=agglomerative", *E2E,
                          "clustering.search_space.n_clusters.high=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trial   5/5" in done.stdout and "gym-churn-segmentation version 1" in done.stdout
    # The guard: contract length and months left (r > 0.9) are never clustered together.
    assert ("not searched: column subset 'contract_tenure' holds near duplicates "
            "Contract_period ~ Month_to_end_contract") in done.stdout

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
    assert 4 <= n_segments <= 5
    assert parent.data.params["column_subset"] in ("tenure_groups_referral", "contract_tenure_partner")
    assert parent.data.params["refused_subsets"] == "contract_tenure"
    # The chosen trial's parameters under the trials' names; no internal settings as params.
    assert parent.data.params["n_clusters"] and parent.data.params["linkage"]
    assert not [k for k in parent.data.params if k.startswith("best_") or k in (
        "segment_names", "skops_trusted_types", "data_schema")]
    assert parent.data.tags["run_type"] == "segmentation"
    assert parent.data.metrics["max_conditions"] <= 3
    assert parent.data.metrics["correlated_input_pairs"] == 0

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"config.yaml", "portraits.csv", "portraits.md", "rules.csv", "pareto_front.csv",
            "trials.csv", "selection.csv", "segments.csv"} <= artifacts
    assert {f"plots/{p}.png" for p in ("segment_map", "silhouette", "feature_profile",
                                       "dendrogram", "pareto_front")} <= plots
    # The portraits' table of means is headed in words (conf/data labels), not column names.
    portraits_md = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/portraits.md")
    header = next(line for line in portraits_md.splitlines() if line.startswith("| segment |"))
    assert "| months as a member |" in header and "Lifetime" not in header

    version = client.get_model_version_by_alias("gym-churn-segmentation", "challenger")
    assert version.run_id == parent.info.run_id
    for key in ("silhouette", "rule_fidelity_min", "distinct_columns_min", "stability_ari_mean"):
        assert float(version.tags[key]) == pytest.approx(parent.data.metrics[key], abs=1e-6)
    names = {int(k.split("_")[1]): v for k, v in version.tags.items()
             if k.startswith("segment_") and k.endswith("_name")}
    assert sorted(names) == list(range(n_segments))
    for segment, name in names.items():  # each name also printed in the summary, with its rule
        assert name in done.stdout and parent.data.tags[f"segment_{segment}_name"] == name
        assert version.tags[f"segment_{segment}_rule"] in done.stdout

    # The registered model assigns customers (raw columns) exactly as the rules say: each
    # segment's filter expression selects precisely the customers the model puts in it.
    model = mlflow.pyfunc.load_model("models:/gym-churn-segmentation@challenger")
    for new in (make_synthetic_customers(40, seed=123), customers):
        X = new.drop(columns="Churn")  # raw: integer columns as integers, no cast
        out = model.predict(X)
        assert list(out.columns) == ["segment", "segment_name"] and len(out) == len(X)
        assert set(out["segment"]) <= set(names)
        assert all(names[s] == n for s, n in zip(out["segment"], out["segment_name"], strict=True))
        for segment in names:
            selected = X.eval(version.tags[f"segment_{segment}_filter"]).to_numpy()
            assert (selected == (out["segment"] == segment).to_numpy()).all()

    # Monitoring's segment mix reference travels with it: each segment's share of the customers
    # it was fitted on.
    reference = model.unwrap_python_model().settings["reference"]
    fitted = model.predict(customers.drop(columns="Churn"))["segment"].value_counts(normalize=True)
    assert {int(k): v for k, v in reference["shares"].items()} == pytest.approx(fitted.to_dict())

    # It loads and assigns the same segments where this repository is not importable.
    X = customers.drop(columns="Churn")
    here = model.predict(X)
    there, code, files = predict_elsewhere("models:/gym-churn-segmentation@challenger",
                                             f"sqlite:///{tmp_path}/mlflow.db", X, tmp_path / "x")
    assert there["segment"].tolist() == here["segment"].tolist() and "/code/gymchurn/" in code
    assert unlisted_imports(files, "models:/gym-churn-segmentation@challenger") == []

    # Each portrait: a rule of <= 3 conditions, a paragraph covering every column, a measure.
    portraits = pd.read_csv(client.download_artifacts(parent.info.run_id, "portraits.csv",
                                                      str(tmp_path)))
    assert len(portraits) == n_segments and portraits["name"].is_unique
    for r in portraits.itertuples():
        assert r.portrait.count(";") == 12  # 13 columns, one clause each
        assert r.measure in {"default", *(m.name for m in load_catalogue(
            OmegaConf.to_container(compose_config("segment", []).measures)).items)}


@pytest.mark.slow
def test_rerun_resumes_the_study_and_keeps_metric_keys(store_overrides):
    cfg = segment_cfg(store_overrides, "clustering=gmm", *E2E,
                      "clustering.search_space.n_components.high=5", "tune.n_trials=3",
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
    assert "nope" in done.stderr and "tenure_groups_referral" in done.stderr  # the bad name, the choices


def test_unknown_clustering_option_names_the_choices():
    with pytest.raises(Exception, match="clustering/nope") as err:
        compose_config("segment", ["clustering=nope"])
    assert "agglomerative" in str(err.value) and "kmeans" in str(err.value)


def test_a_search_of_only_near_duplicate_subsets_is_refused_before_any_work(customers):
    from gymchurn.segments.fit import plan

    cfg = compose_config("segment", ["segmentation.search=[all_columns,contract_tenure]"])
    with pytest.raises(GymchurnError, match="near-duplicate columns") as err:
        plan(cfg, customers, {"path": "synthetic", "sha256": "-"})
    assert "Contract_period ~ Month_to_end_contract" in str(err.value)
    searched = plan(compose_config("segment", []), customers, {"path": "synthetic", "sha256": "-"})
    assert set(searched.refused) == {"all_columns", "contract_tenure"}
    assert not set(searched.refused) & set(searched.subsets)
