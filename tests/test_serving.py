"""The served models' input check (gymchurn.serving): the rules of `make predict`, an HTTP 400
naming the column and the rule, and a quick path that never lets through what the full
validation refuses. The real server: tests/lifecycle/test_serve.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from gymchurn.config import compose_config
from gymchurn.data import SCHEMA_ORDER, validate_customers
from gymchurn.errors import GymchurnError
from gymchurn.serving import checked_input, data_schema, quick_check


@pytest.fixture(scope="module")
def rules():
    return data_schema(compose_config("predict", ["input=x.csv"]).data)


@pytest.fixture
def request_rows(customers):
    """What `mlflow models serve` hands the model: the feature columns as doubles."""
    return customers[SCHEMA_ORDER[:-1]].head(50).astype("float64")


# The requests, and more of the same kind.
BAD_VALUES = [
    ("gender", 7, "column 'gender': rule 'one of 0, 1'"),
    ("Contract_period", 5, "column 'Contract_period': rule 'one of 1, 3, 6, 12'"),
    ("Age", 200, "column 'Age': rule 'between 14 and 100'"),
    ("Month_to_end_contract", -1, "column 'Month_to_end_contract': rule 'between 1 and 12'"),
    ("Lifetime", -3, "column 'Lifetime': rule 'between 0 and 600'"),
    ("Avg_additional_charges_total", -10.5, "column 'Avg_additional_charges_total': rule 'between 0 and "),
    ("Age", np.nan, "column 'Age': rule 'no missing values'"),
    ("Age", 27.5, "column 'Age': rule 'whole_number'"),
    ("Avg_class_frequency_total", np.inf, "column 'Avg_class_frequency_total': rule 'between 0 and "),
]


@pytest.mark.parametrize(("column", "value", "message"), BAD_VALUES,
                         ids=[f"{c}={v}" for c, v, _ in BAD_VALUES])
def test_a_broken_rule_is_a_client_error_naming_column_and_rule(rules, request_rows, column, value,
                                                                message):
    bad = request_rows.copy()
    bad.loc[bad.index[3], column] = value
    with pytest.raises(MlflowException) as info:
        checked_input(bad, rules)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 from the server
    assert message in info.value.message and "rows 4" in info.value.message
    with pytest.raises(GymchurnError) as batch:  # the same words as `make predict`
        validate_customers(bad, rules["columns"], "Churn", require_target=False)
    assert info.value.message == str(batch.value)


def test_a_valid_request_is_typed_as_make_predict_types_it(rules, request_rows):
    checked = checked_input(request_rows, rules)
    expected, _ = validate_customers(request_rows, rules["columns"], "Churn", require_target=False)
    pd.testing.assert_frame_equal(checked, expected)  # int64 ints, float64 floats, same index
    with_target = request_rows.assign(Churn=1.0)
    assert list(checked_input(with_target, rules).columns) == list(request_rows.columns)
    assert checked_input(request_rows, None) is request_rows  # a model logged without rules


def test_the_quick_check_never_passes_what_the_full_validation_refuses(rules, customers):
    from pandera.errors import SchemaErrors

    from gymchurn.data import build_schema

    # 400 customers, each with one value replaced by a value that may or may not break a rule;
    # the full validation runs once over all of them and says which rows it refuses.
    rng = np.random.default_rng(0)
    rows = customers[SCHEMA_ORDER[:-1]].sample(400, replace=True, random_state=0)
    rows = rows.astype("float64").reset_index(drop=True)
    candidates = [-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 12.0, 13.0, 14.0, 41.5, 100.0, 101.0, np.nan]
    for i in rows.index:
        rows.loc[i, rng.choice(rows.columns)] = rng.choice(candidates)
    columns = {c: rules["columns"][c] for c in rows.columns}
    try:
        build_schema(columns, "Churn", require_target=False).validate(rows, lazy=True)
        refused = set()
    except SchemaErrors as err:
        refused = set(err.failure_cases["index"].dropna().astype(int))
    quick = [quick_check(rows.loc[[i]], columns) is not None for i in rows.index]
    assert not any(quick[i] for i in refused)  # never passes a refused row
    assert all(quick[i] for i in rows.index if i not in refused)  # and is not stricter here
    assert 50 < len(refused) < 350  # both sides were exercised


def test_schema_typed_follows_the_schema_and_how_the_file_stores_a_column(tmp_path, customers):
    """The real table writes months left as 5.0: the model's input example keeps that column
    as the file stores it; other int columns stay int64."""
    from gymchurn.data import load_customers
    from gymchurn.serving import schema_typed

    table = customers.assign(Month_to_end_contract=customers["Month_to_end_contract"].astype(float))
    table.to_csv(tmp_path / "c.csv", index=False)  # "5.0", as in gym_churn_us.csv
    cfg = compose_config("config", [f"data.path={tmp_path / 'c.csv'}", "data.shared_path=null",
                                    "data.url=null"])
    loaded, provenance = load_customers(cfg.data)
    assert provenance["stored_kinds"]["Month_to_end_contract"] == "float"
    assert provenance["stored_kinds"]["Age"] == "int"
    typed = schema_typed(loaded.drop(columns="Churn").head(5), cfg.data, provenance["stored_kinds"])
    assert str(typed["Month_to_end_contract"].dtype) == "float64"
    assert str(typed["Age"].dtype) == "int64"
    assert str(typed["Avg_additional_charges_total"].dtype) == "float64"
    # Without the stored kinds, the schema alone decides.
    assert str(schema_typed(typed, cfg.data)["Month_to_end_contract"].dtype) == "int64"
