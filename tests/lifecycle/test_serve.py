"""Real servers on 127.0.0.1: `mlflow models serve` of the champion (what `make serve` runs) and
the tracking server (what `make ui` runs), each started on a free port, polled until it answers
(a generous deadline, never one short read timeout), queried over HTTP and always stopped. Each
server starts once (seconds of imports in every server process): the tests that only read from
the served champion share one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from gymchurn.config import PROJECT_ROOT, compose_config
from gymchurn.data import SCHEMA_ORDER
from gymchurn.predict import run as run_predict
from tests.lifecycle.helpers import (
    CLASSIFIER,
    WITHOUT_SERVER_JOBS,
    aliases,
    check_concurrent_runs,
    free_port,
    new_customers,
    run_modules,
    running,
    store_with_champion,
)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
REQUEST_DEADLINE = 180  # seconds a request may keep being retried while the server is busy


def request(method: str, url: str, **kwargs) -> requests.Response:
    """One HTTP request, retried on connection errors and read timeouts until a generous
    deadline: a server under load may answer its first requests slowly."""
    deadline = time.monotonic() + REQUEST_DEADLINE
    while True:
        try:
            return requests.request(method, url, timeout=(5, 60), **kwargs)
        except (requests.ConnectionError, requests.Timeout):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def make_dry_run(target: str) -> str:
    done = subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    return done.stdout


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    return store_with_champion(tmp_path_factory, tmp_path / "store")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`mlflow models serve` of @champion (version 1) as `make serve` runs it, started once for
    the tests using it, which only send it requests (`make test` runs a file's tests in one
    pytest-xdist worker); yields its URL and the store's overrides."""
    folder = tmp_path_factory.mktemp("served")
    store = store_with_champion(tmp_path_factory, folder / "store")
    port = free_port()
    # As `make serve`: the venv's bin on PATH, since MLflow starts its server as `uvicorn`.
    env = {**os.environ, "MLFLOW_TRACKING_URI": store[-1].split("=", 1)[1],
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    serve = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{CLASSIFIER}@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with running(serve, port, folder / "serve.log", env) as url:
        yield url, store


def test_served_champion_answers_like_make_predict(served, tmp_path):
    command = make_dry_run("serve")
    assert "models serve -m models:/gym-churn-classifier@champion" in command
    assert "--env-manager local" in command and "--host 127.0.0.1" in command
    assert f"PATH={PROJECT_ROOT}/.venv/bin:" in command

    url, store = served
    customers = new_customers(6)
    customers.to_csv(tmp_path / "new.csv", index=False)
    run_predict(compose_config("predict", overrides=[
        *store, f"input={tmp_path / 'new.csv'}", f"output={tmp_path / 'scores.csv'}",
        "reasons=none"]), printer=lambda line: None)
    expected = pd.read_csv(tmp_path / "scores.csv")["churn_probability"].to_numpy()

    # The raw table as it is: integer columns as integers (the signature says long), the
    # others as floats; no cast.
    rows = customers[SCHEMA_ORDER[:-1]]
    payload = {"dataframe_split": {"columns": list(rows.columns),
                                   "data": rows.astype(object).to_numpy().tolist()}}
    response = request("POST", f"{url}/invocations", json=payload)
    assert response.status_code == 200, response.text
    served_scores = [p["churn_probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(served_scores, expected, rtol=1e-12)

    bad = request("POST", f"{url}/invocations", json={"dataframe_split": {
        "columns": ["Age"], "data": [[30.0]]}})
    assert bad.status_code == 400 and "missing" in bad.text.lower()


def test_tracking_server_shows_runs_and_the_champion_and_takes_promotions_at_once(store, tmp_path):
    command = make_dry_run("ui")
    assert "mlflow server --backend-store-uri" in command and "--host 127.0.0.1" in command

    port = free_port()
    server = [str(BIN / "mlflow"), "server", "--backend-store-uri", store[-1].split("=", 1)[1],
              "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
              "--port", str(port), "--workers", "2"]  # 2: the promotions below reach both
    with running(server, port, tmp_path / "ui.log", {**os.environ, **WITHOUT_SERVER_JOBS}) as url:
        api = f"{url}/api/2.0/mlflow"
        experiment = request("GET", f"{api}/experiments/get-by-name",
                             params={"experiment_name": "gym-churn"}).json()
        experiment_id = experiment["experiment"]["experiment_id"]
        found = request("POST", f"{api}/runs/search", json={
            "experiment_ids": [experiment_id], "filter": "tags.run_type = 'churn'",
            "order_by": ["metrics.test_roc_auc DESC"]}).json()["runs"]
        names = sorted(r["info"]["run_name"] for r in found)
        assert names == ["lgbm-engineered", "logreg-engineered", "logreg-raw"]
        for run in found:
            tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
            assert {"model_family", "feature_set", "tuned_metric", "data_digest"} <= set(tags)
            assert any(m["key"] == "test_roc_auc" for m in run["data"]["metrics"])

        champion = request("GET", f"{api}/registered-models/alias", params={
            "name": CLASSIFIER, "alias": "champion"}).json()["model_version"]
        assert champion["version"] == "1"
        assert champion["run_id"] in {r["info"]["run_id"] for r in found}

        # Two users promote through the same server at once (see test_promote.py for the same
        # on one SQLite file): both decisions are kept and the aliases follow them.
        start = aliases()
        assert start == {"champion": "1", "challenger": "3"}
        via_server = [*store[:-1], f"tracking.uri={url}"]
        done = run_modules("gymchurn.promote", [
            [*via_server, "version=2", "force=true", "user=alice"],
            [*via_server, "version=3", "force=true", "user=bob"],
        ])
        check_concurrent_runs(done, url, start)
        assert {aliases()["champion"], aliases()["previous-champion"]} == {"2", "3"}


# The requests (one broken value each), with the column and rule the answer must name.
INVALID_REQUESTS = [
    ("gender", 7, "column 'gender': rule 'one of 0, 1'"),
    ("Contract_period", 5, "column 'Contract_period': rule 'one of 1, 3, 6, 12'"),
    ("Age", 200, "column 'Age': rule 'between 14 and 100'"),
    ("Month_to_end_contract", -2, "column 'Month_to_end_contract': rule 'between 1 and 12'"),
    ("Lifetime", -1, "column 'Lifetime': rule 'between 0 and 600'"),
    ("Avg_additional_charges_total", -50.0, "column 'Avg_additional_charges_total': rule 'between 0 and "),
    # MLflow passes the values as sent (the signature's columns are AnyType): the data rules
    # decide, not MLflow's cast, which turned a missing age into an error of its own and 6.5
    # months into 6.
    ("Age", None, "column 'Age': rule 'no missing values'"),
    ("Age", 29.5, "column 'Age': rule 'whole_number'"),
    ("Contract_period", 6.5, "column 'Contract_period': rule 'one of 1, 3, 6, 12'"),
]


def test_served_champion_refuses_what_make_predict_refuses(served):
    url, _ = served
    rows = new_customers(3)[SCHEMA_ORDER[:-1]]
    for column, value, message in INVALID_REQUESTS:
        data = rows.astype(object).to_numpy().tolist()
        data[1][list(rows.columns).index(column)] = value  # the second customer
        response = request("POST", f"{url}/invocations", json={
            "dataframe_split": {"columns": list(rows.columns), "data": data}})
        assert response.status_code == 400, (column, value, response.text)
        error = response.json()
        assert error["error_code"] == "INVALID_PARAMETER_VALUE", error  # the data rules' answer
        assert message in error["message"], error["message"]
        assert "rows 2" in error["message"], error["message"]
        assert "Traceback" not in response.text
    def answer(data):
        return request("POST", f"{url}/invocations", json={"dataframe_split": {
            "columns": list(rows.columns), "data": data}})

    fine = answer(rows.astype(object).to_numpy().tolist())
    assert fine.status_code == 200 and len(fine.json()["predictions"]) == 3
    # Whole numbers in either JSON form are taken: 29.0 for an integer column, 150 for a
    # double one (the rules check values, not how the client wrote them).
    as_floats = answer(rows.astype(float).to_numpy().tolist())
    assert as_floats.status_code == 200 and as_floats.json() == fine.json()
    spend = list(rows.columns).index("Avg_additional_charges_total")
    ints = [[int(v) if i == spend else v for i, v in enumerate(row)]
            for row in rows.astype(object).to_numpy().tolist()]
    assert answer(ints).status_code == 200
