"""Batch scoring against a temp registry: outputs, reasons, segments, and bad input as a user
would give it (see tests/lifecycle/helpers.py for the registered versions)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from gymchurn.config import compose_config
from gymchurn.predict import run as run_predict
from gymchurn.registry import load_fitted_pipeline
from tests.lifecycle.helpers import (
    CLASSIFIER,
    assert_no_partial_files,
    new_customers,
    register_segmentation,
    registry_snapshot,
    run_modules,
    store_with_champion,
)


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    return store_with_champion(tmp_path_factory, tmp_path / "store")


def predict(store, *overrides):
    lines = []
    result = run_predict(compose_config("predict", overrides=[*store, *overrides]), printer=lines.append)
    return result, "\n".join(lines)


def test_csv_scores_keep_ids_and_match_the_registered_model(store, tmp_path):
    customers = new_customers(60)
    customers.to_csv(tmp_path / "new.csv", index=False)
    result, out = predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}")

    assert "gym-churn-classifier version 1 @champion" in out and "segment columns left out" in out
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"customer_id": str})
    assert list(scores.columns) == ["customer_id", "churn_probability", "churn_flag", "risk_band",
                                    "reason_1", "reason_2", "reason_3"]
    assert scores["customer_id"].tolist() == customers["customer_id"].tolist()  # "007" stays

    served = mlflow.pyfunc.load_model(f"models:/{CLASSIFIER}@champion")
    expected = served.predict(customers.drop(columns="customer_id").astype("float64"))
    np.testing.assert_allclose(scores["churn_probability"], expected["churn_probability"], rtol=1e-12)
    threshold = float(MlflowClient().get_model_version(CLASSIFIER, "1").tags["threshold"])
    flagged = scores["churn_probability"] >= threshold
    assert 0 < flagged.sum() < len(scores) and result["n_flagged"] == flagged.sum()
    assert (scores["churn_flag"] == flagged.astype(int)).all()
    assert (scores.loc[flagged, "risk_band"] == "high").all()
    assert (scores.loc[scores["churn_probability"] < 0.2, "risk_band"] == "low").all()

    # Reasons for the flagged customers only, led by their largest SHAP contribution.
    assert scores.loc[flagged, "reason_1"].notna().all() and scores.loc[~flagged, "reason_1"].isna().all()
    pipeline, _ = load_fitted_pipeline(CLASSIFIER, 1)
    features = pipeline[:-1].transform(customers[flagged.to_numpy()])
    contrib = pipeline[-1].booster_.predict(features.to_numpy(), pred_contrib=True)[:, :-1]
    top = features.columns[contrib.argmax(axis=1)]
    named = scores.loc[flagged, "reason_1"].str.split(" = ").str[0]
    assert named.tolist() == top.tolist()
    assert scores.loc[flagged, "reason_1"].str.contains(r" = .+ \(\+\d+\.\d\d\)$").all()


def test_parquet_all_reasons_of_a_linear_model_and_the_target_carried(store, tmp_path):
    customers = new_customers(30)
    customers["Churn"] = np.arange(30) % 2
    customers.to_parquet(tmp_path / "new.parquet", index=False)
    result, out = predict(store, f"input={tmp_path / 'new.parquet'}",
                          f"output={tmp_path / 'out.parquet'}", "version=2", "reasons=all")
    assert result["version"] in (2, "2") and "version 2" in out and "logreg/raw" in out
    scores = pd.read_parquet(tmp_path / "out.parquet")
    assert scores["Churn"].tolist() == customers["Churn"].tolist()
    assert result["n_reasons"] == 30

    # Linear reasons: coefficient x standardised value, the largest positive one first.
    pipeline, _ = load_fitted_pipeline(CLASSIFIER, 2)
    features = pipeline[:-1].transform(customers)
    contrib = features.to_numpy() * pipeline[-1].coef_[0]
    has_reason = contrib.max(axis=1) > 0
    assert scores["reason_1"].notna().tolist() == has_reason.tolist()
    top = features.columns[contrib.argmax(axis=1)][has_reason]
    assert scores.loc[has_reason, "reason_1"].str.split(" = ").str[0].tolist() == top.tolist()


def test_segments_come_from_the_registered_segmentation_model(store, tmp_path, customers):
    register_segmentation(customers, 3, {"silhouette": "0.3"})  # @challenger, no champion
    new = new_customers(25)
    new.to_csv(tmp_path / "new.csv", index=False)
    _, out = predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 's.csv'}",
                     "reasons=none")
    assert "gym-churn-segmentation version 1" in out and "(@challenger)" in out
    scores = pd.read_csv(tmp_path / "s.csv")
    model = mlflow.pyfunc.load_model("models:/gym-churn-segmentation@challenger")
    expected = model.predict(new.drop(columns="customer_id").astype("float64"))
    assert scores["segment"].tolist() == expected["segment"].tolist()
    assert scores["segment_name"].tolist() == expected["segment_name"].tolist()
    assert "reason_1" not in scores.columns


def bad_inputs(folder):
    """(file name, content writer, extra overrides, expected message) as a user would err."""
    good = new_customers(12)

    def with_change(change):
        def write(path):
            df = good.copy().astype({"Age": object, "Lifetime": object})
            change(df)
            df.to_csv(path, index=False)
        return write

    cases = [
        ("empty.csv", lambda p: p.write_text(""), [], "is empty"),
        ("header.csv", lambda p: p.write_text(",".join(good.columns) + "\n"), [], "has no rows"),
        ("no_age.csv", lambda p: good.drop(columns="Age").to_csv(p, index=False), [],
         "missing column(s): Age"),
        ("text.csv", with_change(lambda d: d.__setitem__("Age", ["x" if i == 2 else a for i, a in
                                                                 enumerate(d["Age"])])), [],
         "column 'Age': rule 'not a number' fails in 1 row(s), e.g. rows 3"),
        ("nan.csv", with_change(lambda d: d.__setitem__("Lifetime", [None if i == 4 else v for i, v
                                                                     in enumerate(d["Lifetime"])])),
         [], "column 'Lifetime': rule 'no missing values' fails in 1 row(s), e.g. rows 5"),
        ("negative.csv", with_change(lambda d: d.__setitem__("Age", [-3 if i == 1 else a for i, a in
                                                                     enumerate(d["Age"])])), [],
         "column 'Age'"),
        ("customers.xlsx", lambda p: p.write_bytes(b"PK\x03\x04"), [], "unknown file type '.xlsx'"),
        ("ok1.csv", lambda p: good.to_csv(p, index=False), ["alias=gold"],
         "no version with alias @gold"),
        ("ok2.csv", lambda p: good.to_csv(p, index=False), ["model_name=gym-churn-nope"],
         "no registered model named 'gym-churn-nope'"),
        ("ok3.csv", lambda p: good.to_csv(p, index=False), ["reasons=some"], "not an option"),
    ]
    for name, write, _, _ in cases:
        write(folder / name)
    return cases


def test_bad_input_gets_one_message_no_output_and_no_registry_change(store, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    cases = bad_inputs(inputs)
    uri = store[-1].split("=", 1)[1]
    before = registry_snapshot(uri)
    runs = run_modules("gymchurn.predict", [
        [*store, f"input={inputs / name}", f"output={outputs / (name + '.scores.csv')}", *extra]
        for name, _, extra, _ in cases
    ])
    for (name, _, _, message), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("error: ") == 1, done.stderr
        assert message in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr
        if "schema" in done.stderr:  # which rows and how to fix them
            assert "conf/data/gym.yaml" in done.stderr
    assert list(outputs.iterdir()) == []  # no output, not even a partial temp file
    assert_no_partial_files(inputs)
    assert registry_snapshot(uri) == before
