"""`make dashboard`: optuna-dashboard on the studies' storage, bound to 127.0.0.1 (started for
real on a free port, polled against a generous deadline, always stopped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest

from tests.lifecycle.helpers import free_port

STARTUP_TIMEOUT = 180  # seconds; a loaded 2-core machine starts servers slowly


def study_summaries(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/studies", timeout=30) as answer:
        return json.load(answer)["study_summaries"]


@pytest.mark.slow
def test_dashboard_serves_the_studies_of_the_storage_on_localhost(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=storage, study_name="churn-lgbm-demo")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    log = tmp_path / "dashboard.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gymchurn.dashboard", f"storage={storage}",
                                 f"port={port}"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                listed = study_summaries(f"http://127.0.0.1:{port}")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dashboard not ready in {STARTUP_TIMEOUT} s:\n{log.read_text()}")
                time.sleep(0.5)
        assert [s["study_name"] for s in listed] == ["churn-lgbm-demo"]
        assert "1 studies in" in log.read_text() and f"http://127.0.0.1:{port}" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_storage_that_does_not_exist_is_refused_without_creating_it(tmp_path):
    missing = tmp_path / "nowhere" / "optuna.db"
    done = subprocess.run([sys.executable, "-m", "gymchurn.dashboard", f"storage=sqlite:///{missing}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "no Optuna storage at" in done.stderr
    assert "Traceback" not in done.stderr and not missing.parent.exists()
