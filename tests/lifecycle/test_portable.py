"""Registered models run wherever MLflow runs (issue 15): a model carries the gymchurn code it
needs (MLflow `code_paths`) and requirements that install what that code imports, so it loads
in a process that cannot see this repository or its editable install."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from tests.lifecycle.helpers import (
    CLASSIFIER,
    new_customers,
    predict_elsewhere,
    store_with_champion,
    unlisted_imports,
)

pytestmark = pytest.mark.slow


def test_the_champion_loads_and_predicts_the_same_without_the_repository(tmp_path_factory, tmp_path):
    store = store_with_champion(tmp_path_factory, tmp_path / "store")
    uri = f"models:/{CLASSIFIER}@champion"
    rows = new_customers(30).drop(columns="customer_id")  # raw: integer columns stay integers
    here = mlflow.pyfunc.load_model(uri).predict(rows)

    there, code, files = predict_elsewhere(uri, store[-1].split("=", 1)[1], rows, tmp_path / "x")
    np.testing.assert_allclose(there["churn_probability"], here["churn_probability"], rtol=1e-12)
    # gymchurn came from the model's own code folder, not from src/.
    assert "/code/gymchurn/" in code and "/src/gymchurn/" not in code
    unlisted = unlisted_imports(files, uri)
    assert unlisted == [], unlisted  # requirements.txt installs every import
