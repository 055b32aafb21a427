"""Ctrl-C and SIGTERM: never in the middle of a write; runs of killed processes closed later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from gymchurn import errors
from gymchurn.errors import install_interrupt_handlers, interruption_point
from gymchurn.registry import register_version
from gymchurn.stale_runs import close_dead_runs, process_is_gone, process_tags
from gymchurn.tracking import setup_experiment, tracked_run

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers can only be installed in the main thread")


@pytest.fixture
def handlers():
    """The commands' handlers, in this process, for one test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install_interrupt_handlers()
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    errors._signals.update(received=False, pending=None)


def send(sig=signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # Python runs the handler at the next bytecode; give the kernel a moment


def test_a_signal_waits_for_the_next_safe_point(handlers, capfd):
    steps = []
    send()
    steps.append("the write in progress")  # not cut off where the signal landed
    with pytest.raises(KeyboardInterrupt):
        interruption_point()
        steps.append("after the safe point")
    assert steps == ["the write in progress"]
    assert "stopping at the next safe point" in capfd.readouterr().err
    interruption_point()  # acted on once, not kept for later


def test_a_second_signal_stops_at_once(handlers):
    steps = []
    with pytest.raises(KeyboardInterrupt):
        send()
        steps.append("first signal waits")
        send(signal.SIGINT)
        steps.append("not reached")
    assert steps == ["first signal waits"]


def test_a_signal_during_the_cleanup_after_the_first_stops_at_once(handlers):
    send()
    with pytest.raises(KeyboardInterrupt):
        interruption_point()  # the first signal, acted on: the command cleans up now
    with pytest.raises(KeyboardInterrupt):
        send(signal.SIGINT)   # the user will not wait for the cleanup


def test_tuning_workers_leave_ctrl_c_to_their_parent(handlers):
    install_interrupt_handlers(sigint=False)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL


@pytest.mark.slow
def test_registration_and_its_alias_are_one_step(handlers, tmp_path, monkeypatch):
    """SIGTERM between registering a version and setting its alias left an unaliased version."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    setup_experiment({"uri": mlflow.get_tracking_uri(), "experiment": "e"})
    with mlflow.start_run():
        model = mlflow.initialize_logged_model(name="m")
    registered = mlflow.register_model

    def register_then_signal(*args, **kwargs):
        version = registered(*args, **kwargs)
        send()  # arrives after the version exists, before its alias
        return version

    monkeypatch.setattr(mlflow, "register_model", register_then_signal)
    register_version(f"models:/{model.model_id}", "gym-churn-classifier", {}, "challenger")
    with pytest.raises(KeyboardInterrupt):  # the command stops after the step, not inside it
        interruption_point()
    version = MlflowClient().get_model_version_by_alias("gym-churn-classifier", "challenger")
    assert str(version.version) == "1"


VICTIM = textwrap.dedent("""
    import sys, time
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
    from gymchurn.tracking import tracked_run

    with tracked_run({"uri": sys.argv[1], "experiment": "e"}, "victim", {}) as run:
        client = MlflowClient()
        client.create_run(run.experiment_id, tags={MLFLOW_PARENT_RUN_ID: run.run_id})
        model = mlflow.initialize_logged_model(name="m")          # PENDING until finalized
        client.create_registered_model("gym-churn-classifier")
        client.create_model_version("gym-churn-classifier", f"models:/{model.model_id}",
                                    run_id=run.run_id)           # no alias yet
        print(run.run_id, flush=True)
        time.sleep(300)
""")


@pytest.mark.slow
def test_runs_of_a_killed_process_are_closed_by_the_next_command(new_mlflow_db):
    uri = f"sqlite:///{new_mlflow_db}"
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, uri], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        run_id = victim.stdout.readline().strip()  # blocks until the victim is ready
        assert run_id, victim.stderr.read()[-2000:]
    finally:
        victim.kill()  # SIGKILL: no handler, no cleanup
        victim.wait(timeout=60)

    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment_id = setup_experiment({"uri": uri, "experiment": "e"})
    alive = client.create_run(experiment_id, tags=process_tags())  # this process: not touched
    assert process_is_gone(client.get_run(run_id).data.tags)
    assert not process_is_gone(alive.data.tags)

    lines = []
    with tracked_run({"uri": uri, "experiment": "e"}, "next", {}, printer=lines.append):
        pass
    assert len(lines) == 1 and run_id in lines[0] and "KILLED" in lines[0]
    assert "removed its unaliased version(s) gym-churn-classifier v1" in lines[0]
    assert client.get_run(run_id).info.status == "KILLED"
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert [c.info.status for c in children] == ["KILLED"]
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert [m.status for m in models] == [LoggedModelStatus.FAILED]
    assert client.search_model_versions("name = 'gym-churn-classifier'") == []
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert close_dead_runs(experiment_id) == []  # nothing left to close
