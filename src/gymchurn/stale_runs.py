"""Runs whose process is gone: a command killed outright (SIGKILL, power loss, a closed
terminal) cannot mark its own MLflow run, so every run carries tags naming its process (host,
pid, the pid's start time) and the next command in the same experiment closes the runs whose
process no longer exists. Runs from other hosts are left alone: their processes cannot be seen.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path


def process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot; Linux), '' where unknown: with the
    pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def pid_namespace() -> str:
    """Which pid numbering this process sees (containers sharing a host name may differ)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """Tags naming the process a run belongs to, so a later command can tell it died."""
    pid = os.getpid()
    return {"process.host": socket.gethostname(), "process.pid": str(pid),
            "process.start": process_start(pid), "process.pidns": pid_namespace()}


def process_is_gone(tags: Mapping[str, str]) -> bool:
    """True when the run's process has certainly ended: same host and pid namespace, and no
    process with its pid and start time. Any other run is never judged."""
    if (tags.get("process.host") != socket.gethostname()
            or tags.get("process.pidns", "") != pid_namespace()
            or not str(tags.get("process.pid", "")).isdigit()):
        return False
    pid = int(tags["process.pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return bool(tags.get("process.start")) and process_start(pid) != tags["process.start"]


def close_dead_runs(experiment_id: str) -> list[str]:
    """Mark RUNNING runs whose process is gone (SIGKILL, power loss) KILLED, with their RUNNING
    trial runs; fail the models they left PENDING and delete the versions they registered
    without an alias (registration and alias are one step). Return one line per run."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    host = socket.gethostname().replace("'", "")
    runs = client.search_runs(
        [experiment_id], max_results=1000,
        filter_string=f"attributes.status = 'RUNNING' and tags.`process.host` = '{host}'")
    notes = []
    for run in runs:
        if not process_is_gone(run.data.tags):
            continue
        run_id = run.info.run_id
        children = client.search_runs(
            [experiment_id], max_results=10000,
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'")
        for child in children:
            client.set_terminated(child.info.run_id, "KILLED")
        for model in client.search_logged_models([experiment_id],
                                                 filter_string=f"source_run_id = '{run_id}'"):
            if model.status == LoggedModelStatus.PENDING:
                client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        removed = []
        for found in client.search_model_versions(f"run_id = '{run_id}'"):
            version = client.get_model_version(found.name, found.version)  # with its aliases
            if not version.aliases:
                try:
                    client.delete_model_version(version.name, version.version)
                except MlflowException as err:  # another command closing the same run was first
                    if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    continue
                removed.append(f"{version.name} v{version.version}")
        client.set_terminated(run_id, "KILLED")
        note = (f"marked run {run_id} KILLED: its process (pid {run.data.tags['process.pid']} "
                f"on {run.data.tags['process.host']}) is gone")
        if removed:
            note += f"; removed its unaliased version(s) {', '.join(removed)}"
        notes.append(note)
    return notes
