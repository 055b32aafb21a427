"""Batch scoring against a temp registry: outputs, reasons, segments, and bad input as a user
would give it (see tests/lifecycle/helpers.py for the registered versions)."""

from __future__ import annotations

import csv
import functools
import os
import re
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from gymchurn.config import compose_config
from gymchurn.errors import GymchurnError
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


@functools.cache
def predict_data():
    """The data settings of the predict config: composed once (a tenth of a second each time),
    not for every reason checked."""
    return compose_config("predict").data


def worded(column: str, value: float) -> str:
    """A reason as the reasons in words show it: the plain name (conf/data/gym.yaml labels; for
    a negative value the negative label, if any, with the value's size) and the value, whole
    numbers as such, from 10 on rounded to a whole number, else two significant digits."""
    data = predict_data()
    name = data.labels[column]
    if value < 0 and column in data.negative_labels:
        name, value = data.negative_labels[column], -value
    if float(value).is_integer():
        return f"{name} = {int(value)}"
    return f"{name} = {value:.0f}" if abs(value) >= 10 else f"{name} = {value:.2g}"


def predict(store, *overrides):
    lines = []
    result = run_predict(compose_config("predict", overrides=[*store, *overrides]), printer=lines.append)
    return result, "\n".join(lines)


def test_csv_scores_keep_ids_and_match_the_registered_model(store, tmp_path):
    customers = new_customers(60)
    customers.to_csv(tmp_path / "new.csv", index=False)
    result, out = predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}")

    assert "gym-churn-classifier version 1 @champion" in out and "segment columns left out" in out
    # round_trip: pandas < 3.1's default parser drops digits of 0.0000167...-like numbers
    scores = pd.read_csv(tmp_path / "scores.csv", dtype={"customer_id": str}, float_precision="round_trip")
    assert list(scores.columns) == ["customer_id", "customer_row", "priority_rank",
                                    "churn_probability", "churn_flag", "risk_band", "reason_1",
                                    "reason_2", "reason_3", "suggested_action"]
    assert scores["customer_id"].tolist() == customers["customer_id"].tolist()  # "007" stays
    # sorted by rank, each row still says which customer of the input it is
    by_rank = scores.sort_values("priority_rank")
    assert (customers["customer_id"].iloc[by_rank["customer_row"] - 1].to_numpy()
            == by_rank["customer_id"].to_numpy()).all()

    served = mlflow.pyfunc.load_model(f"models:/{CLASSIFIER}@champion")
    expected = served.predict(customers.drop(columns="customer_id"))
    np.testing.assert_allclose(scores["churn_probability"], expected["churn_probability"], rtol=1e-12)
    threshold = float(MlflowClient().get_model_version(CLASSIFIER, "1").tags["threshold"])
    flagged = scores["churn_probability"] >= threshold
    assert 0 < flagged.sum() < len(scores) and result["n_flagged"] == flagged.sum()
    assert (scores["churn_flag"] == flagged.astype(int)).all()
    assert (scores.loc[flagged, "risk_band"] == "high").all()
    assert (scores.loc[scores["churn_probability"] < 0.2, "risk_band"] == "low").all()

    # Reasons for the flagged customers only, led by their largest SHAP contribution, in words:
    # the feature's plain name (conf/data/gym.yaml labels) and the customer's value.
    assert scores.loc[flagged, "reason_1"].notna().all() and scores.loc[~flagged, "reason_1"].isna().all()
    pipeline, _ = load_fitted_pipeline(CLASSIFIER, 1)
    features = pipeline[:-1].transform(customers[flagged.to_numpy()])
    contrib = pipeline[-1].booster_.predict(features.to_numpy(), pred_contrib=True)[:, :-1]
    top = contrib.argmax(axis=1)
    values = features.to_numpy()[np.arange(len(top)), top]
    expected = [worded(features.columns[f], v) for f, v in zip(top, values, strict=True)]
    assert scores.loc[flagged, "reason_1"].tolist() == expected


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

    # Linear reasons: coefficient x standardised value, the largest positive one first; the
    # value shown is the customer's own (months, visits), not the standardised one.
    pipeline, _ = load_fitted_pipeline(CLASSIFIER, 2)
    features = pipeline[:-1].transform(customers)
    contrib = features.to_numpy() * pipeline[-1].coef_[0]
    has_reason = contrib.max(axis=1) > 0
    assert scores["reason_1"].notna().tolist() == has_reason.tolist()
    top = features.columns[contrib.argmax(axis=1)][has_reason]
    own = [customers[c].iloc[i] for c, i in zip(top, np.flatnonzero(has_reason), strict=True)]
    assert scores.loc[has_reason, "reason_1"].tolist() == [
        worded(c, v) for c, v in zip(top, own, strict=True)]


def first_matching_action(customers: pd.DataFrame, measures) -> list[str]:
    """Each customer's action straight from the catalogue: the first measure whose `for`
    holds, row by row, else the default."""
    actions = []
    for i in range(len(customers)):
        row = customers.iloc[[i]]
        hits = [m["action"] for m in measures["items"] if bool(row.eval(m["for"]).iloc[0])]
        actions.append(hits[0] if hits else measures["default_action"])
    return actions


def test_priority_ranks_follow_the_probability_and_actions_the_catalogue(store, tmp_path):
    customers = new_customers(80)
    customers.loc[:9, "Avg_class_frequency_total"] = 0.0  # ties: ten customers alike ...
    customers.loc[:9, "Avg_class_frequency_current_month"] = 0.0
    for column in ("Lifetime", "Contract_period", "Month_to_end_contract", "Age", "Group_visits",
                   "Promo_friends", "Avg_additional_charges_total", "Partner", "Phone", "gender",
                   "Near_Location"):
        customers.loc[:9, column] = customers.loc[0, column]  # ... in every column
    customers.to_csv(tmp_path / "new.csv", index=False)
    predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}")
    scores = pd.read_csv(tmp_path / "scores.csv")

    ranks = scores["priority_rank"]
    assert ranks.dtype.kind == "i" and sorted(ranks) == list(range(1, len(scores) + 1))
    by_rank = scores.sort_values("priority_rank")
    assert by_rank["churn_probability"].is_monotonic_decreasing  # rank 1: the highest
    tied = scores.loc[:9]
    assert tied["churn_probability"].nunique() == 1
    assert tied["priority_rank"].is_monotonic_increasing  # equal probabilities: by row order

    measures = OmegaConf.to_container(compose_config("predict").measures)
    assert scores["suggested_action"].tolist() == first_matching_action(
        customers.drop(columns="customer_id"), measures)
    assert scores["suggested_action"].nunique() > 2  # several measures, not one for everyone


def test_a_bad_measure_condition_is_refused_before_any_output(store, tmp_path):
    new_customers(10).to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "scores.csv"
    lines = []
    cfg = compose_config("predict", overrides=[*store, f"input={tmp_path / 'new.csv'}",
                                               f"output={output}",
                                               "measures.items.1.for='Visits_per_week < 2'"])
    with pytest.raises(GymchurnError) as info:
        run_predict(cfg, printer=lines.append)
    message = str(info.value)
    assert "measure 'onboarding': for 'Visits_per_week < 2' cannot be evaluated" in message
    assert "conf/measures/" in message and not output.exists()
    assert lines == []  # before the model was loaded (its line is the first printed)
    assert_no_partial_files(tmp_path)


@pytest.mark.parametrize("previous", [
    ["churn_probability", "churn_flag", "risk_band"],
    ["churn_probability", "churn_flag", "risk_band", "segment", "segment_name",
     "reason_1", "reason_2", "reason_3"],
])
def test_a_scores_file_of_the_layout_before_rank_and_action_is_still_replaced(store, tmp_path,
                                                                              previous):
    new_customers(10).to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "scores.csv"
    output.write_text(",".join(["customer_id", *previous]) + "\n" + ",".join(["007"] + ["1"] * len(
        previous)) + "\n")
    predict(store, f"input={tmp_path / 'new.csv'}", f"output={output}", "reasons=none")
    assert list(pd.read_csv(output).columns) == [
        "customer_id", "customer_row", "priority_rank", "churn_probability", "churn_flag",
        "risk_band", "suggested_action"]


def test_segments_come_from_the_registered_segmentation_model(store, tmp_path, customers):
    register_segmentation(customers, 3, {"silhouette": "0.3"})  # @challenger, no champion
    new = new_customers(25)
    new.to_csv(tmp_path / "new.csv", index=False)
    _, out = predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 's.csv'}",
                     "reasons=none")
    assert "gym-churn-segmentation version 1" in out and "(@challenger)" in out
    scores = pd.read_csv(tmp_path / "s.csv")
    model = mlflow.pyfunc.load_model("models:/gym-churn-segmentation@challenger")
    expected = model.predict(new.drop(columns="customer_id"))
    assert scores["segment"].tolist() == expected["segment"].tolist()
    assert scores["segment_name"].tolist() == expected["segment_name"].tolist()
    assert "reason_1" not in scores.columns
    # Called directly (as predict, monitor, report and promote call it): a missing column is named.
    from gymchurn.segments.model import assign_segments

    with pytest.raises(GymchurnError, match=r"needs the column\(s\) Age, which the customer table lacks"):
        assign_segments(model, new.drop(columns=["customer_id", "Age"]))


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
        ("ok3.csv", lambda p: good.to_csv(p, index=False), ["reasons=some"], "reasons/some"),
        ("ok4.csv", lambda p: good.to_csv(p, index=False), ["reasons.method=fast"],
         "reasons.method=fast is not an option"),
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


REFUSED_BEFORE_IMPORTS = """
import sys
from gymchurn.config import compose_config
from gymchurn.errors import GymchurnError
from gymchurn.predict import run
try:
    run(compose_config("predict", sys.argv[1:]), printer=print)
except GymchurnError as err:
    print("refused:", err)
print("imported:", sorted({"mlflow", "sklearn", "skops"} & set(sys.modules)))
"""


def test_a_bad_file_is_refused_before_the_model_libraries_import(store, tmp_path):
    """What keeps a refusal quick (seconds of imports saved): checked in a fresh process."""
    bad = tmp_path / "negative.csv"
    new_customers(12).assign(Age=-3).to_csv(bad, index=False)
    done = subprocess.run([sys.executable, "-c", REFUSED_BEFORE_IMPORTS, *store, f"input={bad}",
                           f"output={tmp_path / 'scores.csv'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: the customer table does not match the schema" in done.stdout
    assert "imported: []" in done.stdout


# ---------------------------------------------------------------- files as people make them, outputs


def test_spreadsheet_csv_with_a_byte_order_mark_gives_back_ids_byte_for_byte(store, tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM; the id column comes first, so the BOM sits on its
    name: 007 must still come back as 007 (not 7) in the scores, and so must 1e3 or 1.50."""
    customers = new_customers(12)
    ids = ["007", "0042", "1e3", "00", "-0", "1.50", "+7", "000", "010", "1E2", "0.0", "08"]
    customers["customer_id"] = ids
    source = tmp_path / "new.csv"
    customers.to_csv(source, index=False, encoding="utf-8-sig")
    assert source.read_bytes()[:3] == b"\xef\xbb\xbf"
    predict(store, f"input={source}", f"output={tmp_path / 'scores.csv'}", "reasons=none")

    with open(tmp_path / "scores.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["customer_id", "customer_row", "priority_rank"]
    assert [row[0] for row in rows[1:]] == ids


@pytest.fixture
def umask_027():
    old = os.umask(0o027)  # stricter than the usual 022, so ordinary and fixed modes differ
    yield 0o027
    os.umask(old)


def test_native_reasons_are_the_compiled_reasons(store, tmp_path):
    """reasons.method=native (LightGBM's own pred_contrib) words the same reasons."""
    new_customers(300).to_csv(tmp_path / "new.csv", index=False)
    outputs = {}
    for method in ("compiled", "native"):
        outputs[method] = tmp_path / f"{method}.csv"
        _, out = predict(store, f"input={tmp_path / 'new.csv'}", f"output={outputs[method]}",
                         "reasons=all", f"reasons.method={method}")
        assert ("LightGBM pred_contrib" in out) == (method == "native")
    compiled, native = (pd.read_csv(outputs[m]) for m in ("compiled", "native"))
    pd.testing.assert_frame_equal(compiled, native)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_previous_scores_file_is_replaced_with_ordinary_permissions(store, tmp_path, umask_027,
                                                                      suffix):
    new_customers(20).to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / f"scores{suffix}"
    predict(store, f"input={tmp_path / 'new.csv'}", f"output={output}", "reasons=none")
    first = output.read_bytes()
    predict(store, f"input={tmp_path / 'new.csv'}", f"output={output}", "reasons=all")
    assert output.read_bytes() != first
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    assert list(read(output).columns)[-4:] == ["reason_1", "reason_2", "reason_3", "suggested_action"]
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask_027
    assert_no_partial_files(tmp_path)


def test_an_output_that_is_not_a_previous_scores_file_is_refused_before_any_work(store, tmp_path):
    new_customers(10).to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / "empty.csv").write_text("")  # unreadable input: the output is refused first
    (tmp_path / "members.csv").write_text("customer_id,name\n007,Ann\n")
    (tmp_path / "new_scores.csv").write_text("customer_id,churn_probability,notes\n007,0.5,x\n")
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "members.csv")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    cases = [
        ([f"input={tmp_path / 'empty.csv'}", f"output={tmp_path / 'members.csv'}"],
         "members.csv already exists and is not a scores file written by `make predict`"),
        ([f"input={tmp_path / 'new.csv'}"],  # the default output: new_scores.csv, not ours
         "new_scores.csv already exists and is not a scores file"),
        ([f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'folder.csv'}"],
         "folder.csv is an existing folder, not a file"),
        ([f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'link.csv'}"],
         "link.csv is a symbolic link"),
    ]
    for overrides, message in cases:
        with pytest.raises(GymchurnError, match=re.escape(message)):
            predict(store, *overrides)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert list((tmp_path / "folder.csv").iterdir()) == []


def test_a_file_that_appears_at_the_output_while_scoring_is_kept(store, tmp_path):
    new_customers(10).to_csv(tmp_path / "new.csv", index=False)
    output = tmp_path / "scores.csv"

    def printer(line):  # someone saves their own file there while the customers are scored
        if line.startswith("scored:"):
            output.write_text("customer_id,phone\n007,555-0100\n")

    cfg = compose_config("predict", overrides=[*store, f"input={tmp_path / 'new.csv'}",
                                               f"output={output}", "reasons=none"])
    with pytest.raises(GymchurnError, match="already exists and is not a scores file"):
        run_predict(cfg, printer=printer)
    assert output.read_text() == "customer_id,phone\n007,555-0100\n"
    assert_no_partial_files(tmp_path)


# ---------------------------------------------------------------- the store as a user may leave it


def test_scoring_with_a_champion_whose_files_are_gone_names_the_version(store, tmp_path):
    from tests.lifecycle.helpers import lose_model_files

    lose_model_files(tmp_path / "store" / "mlflow.db", CLASSIFIER, 1, tmp_path / "deleted")
    new_customers(10).to_csv(tmp_path / "new.csv", index=False)
    with pytest.raises(GymchurnError) as info:
        predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}")
    message = str(info.value)
    assert f"{CLASSIFIER} version 1 @champion is registered but its model files are gone" in message
    assert (tmp_path / "deleted").as_uri() in message and "score with version=N" in message
    assert "No such artifact" not in message and not (tmp_path / "scores.csv").exists()
    result, _ = predict(store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}",
                        "version=2")  # the fix the message gives
    assert str(result["version"]) == "2" and (tmp_path / "scores.csv").exists()


def as_user_without_write_access(args: list[str], cwd):
    """Run a command that may not write to files and folders without write permission: root may,
    whatever the modes, so as root it runs without the capabilities that allow it."""
    import shutil

    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and setpriv (util-linux) is not installed")
        args = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.mark.slow
def test_scoring_reads_a_read_only_store_and_promotion_says_it_cannot_write(store, tmp_path):
    folder, out = tmp_path / "store", tmp_path / "out"
    db = folder / "mlflow.db"
    out.mkdir()
    new_customers(20).to_csv(out / "new.csv", index=False)
    before = db.read_bytes()
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        scored = as_user_without_write_access(
            [sys.executable, "-m", "gymchurn.predict", *store, f"input={out / 'new.csv'}",
             f"output={out / 'scores.csv'}", "reasons=none"], cwd=out)
        promoted = as_user_without_write_access(
            [sys.executable, "-m", "gymchurn.promote", *store, "version=2", "force=true"], cwd=out)
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert scored.returncode == 0, scored.stderr
    assert len(pd.read_csv(out / "scores.csv")) == 20
    assert promoted.returncode == 2, promoted.stdout + promoted.stderr
    assert promoted.stderr == (
        f"error: the MLflow store {db} is read-only here, and this command writes to it (aliases, "
        f"tags, a run). Run it as a user who may write to {folder}, or where the store is "
        "writable.\n")
    assert db.read_bytes() == before  # neither command changed the store


@pytest.mark.slow
def test_scoring_with_a_truncated_store_is_one_line_without_a_traceback(store, tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    with open(db, "r+b") as f:  # a copy that stopped half-way
        f.truncate(db.stat().st_size // 2)
    new_customers(5).to_csv(tmp_path / "new.csv", index=False)
    [done] = run_modules("gymchurn.predict", [[*store, f"input={tmp_path / 'new.csv'}",
                                               f"output={tmp_path / 'scores.csv'}"]])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == (
        f"error: the MLflow store {db} is damaged or not a database (database disk image is "
        "malformed). Restore mlflow.db from a backup, or move it away and run `make experiment` "
        "to start a new store (or set tracking.uri=...).\n")
    assert not (tmp_path / "scores.csv").exists()
