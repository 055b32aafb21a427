"""Credentials stay secret (masked in every message, log, logged config, param and tag), an
absent tracking server fails in seconds, and the README says what loading a model runs."""

from __future__ import annotations

import http.server
import logging
import os
import subprocess
import sys
import threading
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from gymchurn import experiment
from gymchurn.config import PROJECT_ROOT, compose_config
from gymchurn.errors import GymchurnError, exit_on_user_error
from gymchurn.probe import unreachable_reason
from gymchurn.redact import mask_credentials, mask_log_records
from gymchurn.tracking import ui_hint
from tests.lifecycle.helpers import free_port

SECRET = "s3cr3t-Pw"


@pytest.fixture(autouse=True)
def _restore_log_record_factory():
    """exit_on_user_error masks log records process-wide; other tests get logging as it was."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


@pytest.mark.parametrize(("text", "masked"), [
    ("postgresql://alice:s3cr3t-Pw@db.example:5432/optuna",
     "postgresql://alice:***@db.example:5432/optuna"),
    ("could not open 'mysql+pymysql://root:s3cr3t-Pw@127.0.0.1/x': refused",
     "could not open 'mysql+pymysql://root:***@127.0.0.1/x': refused"),
    ("http://alice:p@ss:s3cr3t-Pw@host:5000/api", "http://alice:***@host:5000/api"),
    ("https://acct.blob.core.windows.net/c/f.csv?sv=2022&sig=s3cr3t-Pw&se=1",
     "https://acct.blob.core.windows.net/c/f.csv?sv=2022&sig=***&se=1"),
    ("s3://b/k?X-Amz-Credential=s3cr3t-Pw&X-Amz-Signature=s3cr3t-Pw",
     "s3://b/k?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("uri: http://h/x?access_token=s3cr3t-Pw#top", "uri: http://h/x?access_token=***#top"),
    ("host=db user=alice password=s3cr3t-Pw", "host=db user=alice password=***"),
    # Nothing secret: unchanged.
    ("sqlite:////tmp/a b/mlflow.db", "sqlite:////tmp/a b/mlflow.db"),
    ("open:   http://127.0.0.1:5000/#/experiments/1/runs/ab", "open:   http://127.0.0.1:5000/#/experiments/1/runs/ab"),
    ("reason=two words input=x.csv", "reason=two words input=x.csv"),
])
def test_mask_credentials(text, masked):
    assert mask_credentials(text) == masked


def test_error_line_traceback_and_logs_are_masked(capsys):
    url = f"postgresql://alice:{SECRET}@db.example/optuna"

    @exit_on_user_error
    def user_mistake():
        raise GymchurnError(f"could not open the Optuna storage '{url}': refused")

    with pytest.raises(SystemExit) as ended:
        user_mistake()
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith("error: ") and SECRET not in err
    assert "postgresql://alice:***@db.example/optuna" in err

    @exit_on_user_error
    def library_failure():
        logging.getLogger("mlflow.test").warning("retrying %s", url)
        raise RuntimeError(f"API request to {url} failed")

    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit) as ended:
            library_failure()
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert ended.value.code == 1 and "Traceback" in err and "RuntimeError" in err
    assert "retrying postgresql://alice:***@db.example" in err and SECRET not in err


@pytest.mark.slow
def test_experiment_error_line_masks_the_storage_password(store_overrides):
    url = f"postgresql://alice:{SECRET}@127.0.0.1:{free_port()}/optuna"
    overrides = [o for o in store_overrides if not o.startswith("tune.storage=")]
    done = subprocess.run([sys.executable, "-m", "gymchurn.experiment", *overrides,
                           f"tune.storage={url}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: could not open the Optuna storage 'postgresql://alice:***@")
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.slow
def test_unreachable_tracking_server_fails_in_seconds_with_a_masked_address(store_overrides):
    port = free_port()  # nothing listens there
    overrides = [o for o in store_overrides if not o.startswith("tracking.uri=")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://alice:{SECRET}@127.0.0.1:{port}"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "gymchurn.experiment", *overrides, "tune=fast",
                           "tune.n_trials=1", "tune.folds=2"],
                          capture_output=True, text=True, timeout=60, env=env)  # was 255 s
    assert time.monotonic() - start < 20
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"http://alice:***@127.0.0.1:{port}" in done.stderr and "MLFLOW_TRACKING_URI" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_server_that_answers_with_an_error_is_reachable():
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # an auth proxy in front of MLflow
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert unreachable_reason(f"http://u:p@127.0.0.1:{server.server_port}/prefix") is None
    finally:
        server.shutdown()
    assert "refused" in unreachable_reason(f"http://127.0.0.1:{free_port()}", timeout=2).lower()
    assert unreachable_reason("sqlite:////nowhere/mlflow.db") is None


def test_ui_hint_links_without_the_password():
    mlflow.set_tracking_uri(f"http://alice:{SECRET}@tracking.example:5000/")
    lines = ui_hint("3", "abc")
    assert lines == ["open:   http://tracking.example:5000/#/experiments/3/runs/abc"]
    # a database store: the password masked in the `make ui STORE=...` hint too
    mlflow.set_tracking_uri(f"postgresql://alice:{SECRET}@db.example/mlflow")
    lines = ui_hint("3", "abc")
    assert SECRET not in "".join(lines)
    assert "make ui 'STORE=postgresql://alice:***@db.example/mlflow'" in lines[0]
    mlflow.set_tracking_uri(f"sqlite:///{PROJECT_ROOT}/mlruns/mlflow.db")
    assert ui_hint("3", "abc")[0].startswith("open:   make ui   (")
    mlflow.set_tracking_uri("sqlite:////tmp/demo/mlflow.db")  # another store is named
    assert ui_hint("3", "abc")[0].startswith("open:   make ui STORE=sqlite:////tmp/demo/mlflow.db ")
    mlflow.set_tracking_uri("sqlite:///rel/mlflow.db")  # relative: make runs from the project root
    assert ui_hint("3", "abc")[0].startswith(f"open:   make ui STORE=sqlite:///{os.getcwd()}/rel/")


def test_a_database_uri_that_names_its_driver_is_a_tracking_store():
    from gymchurn.tracking import setup_experiment

    uri = f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(GymchurnError) as info:  # taken as a store, then probed: nothing answers
        setup_experiment({"uri": uri, "experiment": "e"})
    message = str(info.value)
    assert message.startswith("no MLflow tracking server or database answers at "
                              "postgresql+psycopg://alice:***@127.0.0.1:")
    assert SECRET not in message


def fail_with_a_password_in_the_message():
    """A tuning worker's trial-logging recipe that fails the way a store with a password can."""
    raise RuntimeError(f"cannot log to postgresql://alice:{SECRET}@db.example/mlflow")


def test_a_tuning_workers_traceback_is_masked(store_overrides, capfd):
    import multiprocessing

    from omegaconf import OmegaConf

    from gymchurn.churn.fit import TuningJob, run_tuning_worker
    from gymchurn.data import make_synthetic_customers

    cfg = compose_config(overrides=[o for o in store_overrides if not o.startswith("hydra.")])
    customers = make_synthetic_customers(100, seed=3)
    job = TuningJob(OmegaConf.to_container(cfg, resolve=True), customers.drop(columns="Churn"),
                    customers["Churn"], "masked-worker", fail_with_a_password_in_the_message)
    worker = multiprocessing.get_context("spawn").Process(target=run_tuning_worker, args=(job, 1))
    worker.start()
    try:
        worker.join(timeout=180)
    finally:
        worker.kill()  # when join timed out; a no-op for a process that has ended
    assert worker.exitcode == 1  # a traceback, not a user error
    stderr = capfd.readouterr().err
    assert "RuntimeError: cannot log to postgresql://alice:***@db.example/mlflow" in stderr
    assert SECRET not in stderr


def test_log_records_are_masked_once_whatever_logs_them():
    url = f"postgresql://alice:{SECRET}@db.example/optuna"
    mask_log_records()
    mask_log_records()  # installed once
    record = logging.getLogger("sqlalchemy.test").makeRecord(
        "sqlalchemy.test", logging.WARNING, __file__, 1, "engine %s failed", (url,), None)
    assert record.getMessage() == "engine postgresql://alice:***@db.example/optuna failed"
    assert logging.getLogger().makeRecord("x", 20, "f", 1, "%d%%", (5,), None).getMessage() == "5%"


@pytest.mark.slow
def test_logged_config_params_and_tags_are_masked(store_overrides, tmp_path):
    download = f"'https://alice:{SECRET}@data.example/gym.csv?token={SECRET}'"
    overrides = [o for o in store_overrides if not o.startswith("hydra.")]
    cfg = compose_config(overrides=[
        *overrides, f"data.url={download}", "tune=fast", "tune.n_trials=1", "tune.folds=2",
        "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1",
        "tracking.log_trials=false", "registry.register=false",
    ])
    result = experiment.run(cfg, printer=lambda line: None)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    logged = mlflow.artifacts.load_text(f"runs:/{result['run_id']}/config.yaml")
    assert "url: https://alice:***@data.example/gym.csv?token=***" in logged
    everything = logged + str(run.data.params) + str(run.data.tags)
    assert SECRET not in everything


def test_readme_states_the_trust_model():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "no code runs on load" not in readme
    trust = readme[readme.index("## Trust model"):]
    assert "models from code" in trust and "artifact store" in trust and "skops" in trust


def test_a_tracking_server_that_refuses_the_login_is_one_masked_message():
    # Review: /health answered, every API call 401: make experiment printed a 68-line traceback.
    from gymchurn.tracking import setup_experiment

    class Gate(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 401)
            self.end_headers()
            self.wfile.write(b"OK" if self.path == "/health" else b"")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(GymchurnError) as info:
            setup_experiment({"uri": f"http://alice:{SECRET}@127.0.0.1:{server.server_port}/",
                              "experiment": "e"})
    finally:
        server.shutdown()
    message = str(info.value)
    assert message.startswith(f"could not open MLflow store 'http://alice:***@127.0.0.1:{server.server_port}/'")
    assert "user and password" in message and SECRET not in message
