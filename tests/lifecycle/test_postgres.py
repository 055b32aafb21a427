"""A real PostgreSQL on 127.0.0.1: two tuning workers on one study, MLflow server backed by it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from gymchurn import experiment
from gymchurn.config import compose_config
from tests.churn.test_experiment import parent_and_children
from tests.lifecycle.helpers import WITHOUT_SERVER_JOBS

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not PG_BIN, reason="PostgreSQL server not installed (apt-get install postgresql)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres_user(args: list[str]) -> list[str]:
    # initdb refuses to run as root; Debian's package creates the `postgres` user for this.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} did not become ready within {timeout:.0f} s")


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields a function db_name -> URL."""
    bin_dir = Path(PG_BIN[-1])
    # Not under tmp_path: pytest's base folder is private to root, and the server runs as
    # the postgres user when we are root.
    data_dir = Path(tempfile.mkdtemp(prefix="gymchurn-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres")
    port = free_port()
    subprocess.run(as_postgres_user([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "gym",
                                     "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres_user([
        str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-w", "-l", str(data_dir / "log"),
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir}", "start",
    ]), check=True, capture_output=True)

    def database(name: str) -> str:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "gym",
                        name], check=True, capture_output=True)
        return f"postgresql://gym@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        subprocess.run(as_postgres_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m",
                                         "fast", "stop"]), capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def tracking_server(tmp_path, postgres):
    """`mlflow server` on 127.0.0.1 with its runs and registry in PostgreSQL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres("mlflow"),
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),
        env={**os.environ, **WITHOUT_SERVER_JOBS},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{url}/health", timeout=30).status == 200,
                   120, "mlflow server")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_two_workers_on_a_postgres_study_log_to_a_postgres_backed_server(
    tmp_path, store_overrides, postgres, tracking_server
):
    storage = postgres("optuna")
    overrides = [o for o in store_overrides if not o.startswith(("tracking.uri", "tune.storage", "hydra."))]
    # Worker 0 in this process (the command line is tested in tests/churn/), worker 1 spawned.
    experiment.run(compose_config(overrides=[
        *overrides, f"tracking.uri={tracking_server}", f"tune.storage={storage}", "workers=2",
        "tune=fast", "tune.timeout=900", "tune.n_trials=6", "tune.folds=2",
        "tune.study_name=pg-shared", "evaluation.repeated_cv_repeats=0",
        "evaluation.permutation_repeats=1",
    ]), printer=lambda line: None)
    trials = optuna.load_study(study_name="pg-shared", storage=storage).trials
    assert 6 <= len(trials) <= 7
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)

    mlflow.set_tracking_uri(tracking_server)
    client = MlflowClient()
    parents, children = parent_and_children(client, "gym-churn")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == sorted(
        t.number for t in trials)
    version = client.get_model_version_by_alias("gym-churn-classifier", "challenger")
    assert version.run_id == parents[0].info.run_id
    # The model's artifacts went through the server into its artifact destination.
    assert any((tmp_path / "server-artifacts").rglob("MLmodel"))
