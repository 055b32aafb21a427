"""`make dashboard`: optuna-dashboard on the studies' storage, bound to 127.0.0.1 (started for
real on a free port, polled against a generous deadline, always stopped)."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import requests

from tests.lifecycle.helpers import free_port, running


@pytest.mark.slow
def test_dashboard_serves_the_studies_of_the_storage_on_localhost(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="churn-lgbm-demo")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    log = tmp_path / "dashboard.log"
    command = [sys.executable, "-m", "gymchurn.dashboard", f"storage={storage}", f"port={port}"]
    with running(command, port, log, ready="/api/studies") as url:
        listed = requests.get(f"{url}/api/studies", timeout=(5, 60)).json()["study_summaries"]
        assert [s["study_name"] for s in listed] == ["churn-lgbm-demo"]
        assert "1 studies in" in log.read_text() and url in log.read_text()


@pytest.mark.parametrize("scheme, name", [("sqlite", "optuna.db"), ("journal", "optuna.journal")])
def test_a_storage_that_does_not_exist_is_refused_without_creating_it(tmp_path, scheme, name):
    missing = tmp_path / "nowhere" / name
    done = subprocess.run([sys.executable, "-m", "gymchurn.dashboard", f"storage={scheme}:///{missing}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no Optuna storage at" in done.stderr
    assert "Traceback" not in done.stderr and not missing.parent.exists()
