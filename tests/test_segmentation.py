"""Segmentation: objectives, constraints, selection, names, portraits, the model, and the
`make segment` entrypoint end to end against a temp MLflow store."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.registry import load_pipeline, save_pipeline
from gymchurn.segment import check_config, column_subsets, run_segmentation
from gymchurn.segmentation import (
    build_segmentation,
    choose_solution,
    constraint_values,
    is_feasible,
    make_objective,
    name_segments,
    portrait_table,
    rank_front,
    segment_scores,
    standardised_differences,
)

SCORE_KEYS = ["silhouette", "n_segments", "davies_bouldin", "calinski_harabasz",
              "min_segment_share", "churn_rate_best_segment", "churn_rate_worst_segment",
              "stability_ari_mean", "stability_ari_std"]
CONSTRAINTS = {"min_segments": 3, "max_segments": 8, "min_segment_share": 0.05}
PHRASES = {"Contract_period": {"high": "long contract", "low": "short contract"},
           "Lifetime": {"high": "long-standing", "low": "newcomers"}}


def segment_cfg(store_overrides, *extra):
    """The segmentation config with every output in tmp_path (Hydra keys are for the CLI)."""
    overrides = [o for o in store_overrides if not o.startswith("hydra.")]
    return compose_config("segment", [*overrides, *extra])


def blobs(sizes, seed=0):
    """Well separated 2-D groups with known sizes and labels."""
    rng = np.random.default_rng(seed)
    centres = [(0, 0), (10, 0), (0, 10), (10, 10), (20, 20)]
    X = np.vstack([rng.normal(centres[i], 0.5, (n, 2)) for i, n in enumerate(sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return X, labels


# ---------------------------------------------------------------- objectives and constraints


def test_scores_of_a_known_segmentation():
    X, labels = blobs([50, 30, 20])
    churn = np.r_[np.zeros(50), np.ones(30), np.r_[np.ones(5), np.zeros(15)]]
    scores = segment_scores(X, labels, churn)
    assert scores["silhouette"] > 0.9
    assert scores["n_segments"] == 3
    assert scores["min_segment_share"] == pytest.approx(0.2)
    assert scores["churn_rate_best_segment"] == 0.0
    assert scores["churn_rate_worst_segment"] == 1.0
    assert scores["churn_range"] == 1.0
    # Shuffled labels: same churn spread impossible to separate -> silhouette collapses.
    noisy = segment_scores(X, np.random.default_rng(1).permutation(labels), churn)
    assert noisy["silhouette"] < 0.1


def test_scores_need_two_segments():
    X, _ = blobs([20, 20])
    with pytest.raises(ValueError, match="1 segment"):
        segment_scores(X, np.zeros(40, dtype=int), np.zeros(40))


def test_constraints_reject_a_two_percent_segment():
    labels = np.r_[np.zeros(49), np.ones(49), np.full(2, 2)]  # 49 %, 49 %, 2 %
    values = constraint_values(labels, **CONSTRAINTS)
    assert values["min_segment_share"] == pytest.approx(0.03)
    assert not is_feasible(values)
    labels = np.r_[np.zeros(45), np.ones(45), np.full(10, 2)]  # 10 % is fine
    assert is_feasible(constraint_values(labels, **CONSTRAINTS))


def test_constraints_bound_the_number_of_segments():
    two = np.repeat([0, 1], 50)
    nine = np.repeat(np.arange(9), 12)
    assert constraint_values(two, **CONSTRAINTS)["min_segments"] == 1
    assert constraint_values(nine, **CONSTRAINTS)["max_segments"] == 1
    assert not is_feasible(constraint_values(two, **CONSTRAINTS))
    assert not is_feasible(constraint_values(nine, **CONSTRAINTS))


def test_objective_returns_every_objective_and_sets_constraints(customers):
    cfg = compose_config("segment", [])
    X, churn = customers[feature_columns(cfg.data)], customers["Churn"]
    subsets = {"contract_tenure": list(cfg.segmentation.column_subsets.contract_tenure)}
    objective = make_objective(
        X, churn, subsets, {"n_clusters": {"type": "int", "low": 3, "high": 4}},
        lambda cols, params: build_segmentation(cfg.clustering, cols, params),
        ["silhouette", "churn_range"], CONSTRAINTS,
    )
    study = optuna.create_study(directions=["maximize", "maximize"])
    for _ in range(2):  # the same parameters twice: the second reuses the first
        study.enqueue_trial({"column_subset": "contract_tenure", "n_clusters": 3})
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert len(first.values) == 2 and -1 <= first.values[0] <= 1
    assert first.values[1] == pytest.approx(first.user_attrs["churn_range"])
    assert set(first.constraints) == {"min_segments", "max_segments", "min_segment_share"}
    assert first.user_attrs["n_segments"] == 3
    assert second.user_attrs["repeat_of"] == first.number
    assert second.values == first.values and second.constraints == first.constraints


# ---------------------------------------------------------------- choosing from the Pareto front


def front_table():
    return pd.DataFrame({
        "trial": [0, 1, 2, 3],
        "silhouette": [0.95, 0.60, 0.52, 0.45],       # 0 is the binary-column trap
        "churn_range": [0.30, 0.55, 0.66, 0.70],
    })


def test_threshold_rule_picks_best_separated_solution_meeting_requirements():
    ranked = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                        {"silhouette": 0.5, "churn_range": 0.47}, "silhouette")
    assert ranked["trial"].tolist()[:2] == [1, 2]
    assert ranked["meets_requirements"].tolist() == [True, True, False, False]


def test_unmet_requirements_fall_back_to_the_nearest_miss_not_the_trap():
    ranked = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                        {"silhouette": 0.7, "churn_range": 0.6}, "silhouette")
    assert not ranked["meets_requirements"].any()
    # Misses in units of each objective's spread on the front (0.5 and 0.4):
    # trial 1: 0.1/0.5 + 0.05/0.4 = 0.325 < trial 2: 0.36 < trial 3: 0.5 < the trap: 0.75.
    assert ranked["trial"].tolist() == [1, 2, 3, 0]
    assert ranked["shortfall"].iloc[0] == pytest.approx(0.325)


def test_knee_rule_prefers_a_balanced_solution():
    ranked = rank_front(front_table(), "knee", ["silhouette", "churn_range"], {}, "silhouette")
    assert ranked["trial"].iloc[0] in (1, 2)
    with pytest.raises(GymchurnError, match="selection.rule"):
        rank_front(front_table(), "best", ["silhouette"])


def test_stability_is_checked_in_order_and_never_beats_requirements():
    front = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                       {"silhouette": 0.5, "churn_range": 0.47}, "silhouette")
    ari = {0: 1.0, 1: 0.7, 2: 0.95, 3: 0.99}
    chosen, checked = choose_solution(front, lambda t: np.full(3, ari[t]), 0.9, 3)
    assert chosen == 2 and checked["trial"].tolist() == [1, 2]  # stops at the first stable
    # Nothing meets the requirements: the nearest miss wins even though the trap is stabler.
    front = rank_front(front_table(), "threshold", ["silhouette", "churn_range"],
                       {"silhouette": 0.7, "churn_range": 0.6}, "silhouette")
    chosen, checked = choose_solution(front, lambda t: np.full(3, ari[t]), 0.9, 4)
    assert chosen == 1 and len(checked) == 4
    assert checked.loc[checked["chosen"], "stability_ari_mean"].item() == pytest.approx(0.7)


# ---------------------------------------------------------------- names and portraits


def test_names_come_from_what_sets_segments_apart():
    differences = pd.DataFrame(
        {"Contract_period": [1.9, -1.2, 0.3], "Month_to_end_contract": [1.8, -1.1, 0.3],
         "Lifetime": [0.9, -0.8, 0.1], "Age": [0.0, 0.0, 0.05]}, index=[0, 1, 2])
    corr = pd.DataFrame(np.eye(4), index=differences.columns, columns=differences.columns)
    corr.loc["Contract_period", "Month_to_end_contract"] = 0.97
    corr.loc["Month_to_end_contract", "Contract_period"] = 0.97
    names = name_segments(differences, PHRASES, 2, 0.5, corr, 0.8)
    # Month_to_end_contract nearly copies Contract_period, so Lifetime is the second word.
    assert names[0] == "long contract, long-standing"
    assert names[1] == "short contract, newcomers"
    assert names[2] == "near average, leaning long contract"
    assert name_segments(differences.assign(Contract_period=[1.9, -1.2, 0.0],
                                            Month_to_end_contract=0.0, Lifetime=0.0),
                         PHRASES)[2] == "typical customers"


def test_clashing_names_get_another_word_or_the_segment_id():
    differences = pd.DataFrame({"Contract_period": [1.5, 1.4, 1.3], "Age": [0.9, -0.9, 0.0]})
    names = name_segments(differences, PHRASES, n_words=1)
    # 0 and 1 both start "long contract": each gets its next word; 2 is then unique.
    assert names == {0: "long contract, high Age", 1: "long contract, low Age",
                     2: "long contract"}
    twins = pd.DataFrame({"Contract_period": [1.5, 1.5, -1.0], "Age": [0.9, 0.9, 0.0]})
    names = name_segments(twins, PHRASES, n_words=1)
    assert names[0] == "long contract, high Age (segment 0)"
    assert names[1] == "long contract, high Age (segment 1)"
    assert names[2] == "short contract"


def test_portrait_table_describes_every_column(customers):
    columns = [c for c in customers.columns if c != "Churn"]
    X = customers[columns]
    labels = (X["Contract_period"] > 1).astype(int).to_numpy() + (X["Lifetime"] > 5).to_numpy()
    differences = standardised_differences(X, labels)
    names = {s: f"segment {s}" for s in np.unique(labels)}
    table = portrait_table(X, labels, customers["Churn"], names, differences, top_features=2)
    assert set(columns) <= set(table.columns)  # every column, not only the clustered ones
    assert table["size"].sum() == len(X) and table["share"].sum() == pytest.approx(1)
    for _, row in table.iterrows():
        inside = labels == row["segment"]
        assert row["churn_rate"] == pytest.approx(customers["Churn"][inside].mean())
        assert row["Age"] == pytest.approx(X["Age"][inside].mean())
        assert row["sets_apart"].count(",") == 1  # two features
    # Standardised difference: (mean inside - mean of the rest) / overall std.
    inside = labels == 0
    expected = (X["Lifetime"][inside].mean() - X["Lifetime"][~inside].mean()) / X["Lifetime"].std(ddof=0)
    assert differences.loc[0, "Lifetime"] == pytest.approx(expected)


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("clustering", ["kmeans", "gmm", "agglomerative"])
def test_segmentation_model_assigns_new_customers_and_saves_safely(tmp_path, customers, clustering):
    cfg = compose_config("segment", [f"clustering={clustering}"])
    X = customers[feature_columns(cfg.data)]
    columns = list(cfg.segmentation.column_subsets.contract_tenure)
    space_arg = "n_components" if clustering == "gmm" else "n_clusters"
    model = build_segmentation(cfg.clustering, columns, {space_arg: 4}).fit(X)
    labels = model[-1].labels_
    sizes = np.bincount(labels)
    assert (np.diff(sizes) <= 0).all()  # numbered from the largest
    assert (model.predict(X) == labels).mean() > 0.99
    new = make_synthetic_customers(50, seed=99)[feature_columns(cfg.data)]
    assigned = model.predict(new)
    assert set(assigned) <= set(range(4)) and len(assigned) == 50

    path = tmp_path / "model.skops"
    trusted = save_pipeline(model, path)
    assert "gymchurn.segmentation.SegmentAssigner" in trusted
    assert (load_pipeline(path, trusted).predict(new) == assigned).all()


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
    fast = compose_config("segment", ["tune=fast"])
    default = compose_config("segment", [])
    assert fast.tune.n_trials < default.tune.n_trials
    assert default.tune.bootstraps >= 2 and fast.tune.metric is None  # churn key switched off


# ---------------------------------------------------------------- end to end


def run_entrypoint(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gymchurn.segment", *overrides],
                          capture_output=True, text=True, timeout=600)


E2E = ["tune=fast", "tune.n_trials=5", "tune.n_startup_trials=3", "tune.bootstraps=3",
       "tune.timeout=600", "segmentation.search=[contract_tenure,visits]",
       "segmentation.selection.stability_candidates=1"]


@pytest.mark.slow
def test_entrypoint_tunes_describes_tracks_and_registers(tmp_path, store_overrides):
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
    first = run_segmentation(cfg)
    second = run_segmentation(cfg)
    assert second["resumed_trials"] == 3 and second["study_name"] == first["study_name"]
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
