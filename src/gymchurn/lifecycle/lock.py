"""One promotion or rollback at a time per registered model: a lock recorded in the registry.

It holds across terminals, users and machines that share a tracking server: the lock is the
registered model `<name>.promotion-lock`. Creating a registered model is atomic in every store
MLflow has (a unique name in SQLite, PostgreSQL, ..., behind a server too): of two processes,
exactly one creates it. Writing a tag and reading it back would not do: both may read "free",
both write, and each may read back its own token before the other's write lands.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gymchurn.errors import GymchurnError, interruption_point
from gymchurn.registry import LOCK_SUFFIX

RELEASED: dict = {}  # returned by _take (by identity) when the holder let go in between
TRANSIENT_TRIES = 5  # store errors other than "taken" (a busy SQLite file) are retried this often


def _lock_state(client, lock_name: str) -> dict | None:
    """The lock's tags (token, holder, since, expires), or None when nobody holds it."""
    try:
        return dict(client.get_registered_model(lock_name).tags or {})
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


class ModelLock:
    """The held lock: `check()` before each write confirms it is still this process's."""

    def __init__(self, client, lock_name: str, token: str):
        self.client, self.lock_name, self.token = client, lock_name, token

    def check(self) -> None:
        state = _lock_state(self.client, self.lock_name) or {}
        # Past its lease, a waiter may break the lock at any moment: no longer safe to write.
        if state.get("token") != self.token or float(state.get("expires", 0)) < time.time():
            raise GymchurnError(
                f"the promotion lock {self.lock_name} was taken over while this command ran "
                "(it took longer than lock.lease_seconds); nothing more was changed. Check the "
                "aliases, then run the command again with a longer lock.lease_seconds.")


def _take(client, lock_name: str, token: str, tags: dict, description: str) -> dict | None:
    """Create the lock; None when this process holds it now, else the holder's tags (RELEASED
    when it was released in between; {} for a lock without tags, made by hand: stale)."""
    try:
        client.create_registered_model(lock_name, tags=tags, description=description)
        return None
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    state = _lock_state(client, lock_name)
    if state is not None and state.get("token") == token:
        return None  # created, but the answer was lost and the client retried
    return RELEASED if state is None else state


@contextlib.contextmanager
def model_lock(name: str, holder: str, wait_seconds: float, lease_seconds: float,
               printer=print) -> Iterator[ModelLock]:
    """Hold the promotion lock of registered model `name` while the block runs.

    Waits (with backoff) up to `wait_seconds` for another holder; a lock past its lease
    (`lease_seconds` from when it was taken) belongs to a process that died and is broken.
    Raises a GymchurnError naming the holder when it cannot be taken.
    """
    client, lock_name = MlflowClient(), f"{name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    deadline, pause, said, errors = time.monotonic() + float(wait_seconds), 0.2, False, 0
    while True:
        now = time.time()
        tags = {"token": token, "holder": f"{holder}@{socket.gethostname()} pid {os.getpid()}",
                "since": f"{now:.3f}", "expires": f"{now + float(lease_seconds):.3f}"}
        try:
            state = _take(client, lock_name, token, tags,
                          f"Lock: a promotion or rollback of {name} is running; deleted when it ends.")
        except MlflowException as err:  # a busy SQLite file, a server hiccup: a few more tries
            errors += 1
            if errors >= TRANSIENT_TRIES:
                raise GymchurnError(f"could not take the promotion lock of {name} in the "
                                    f"registry: {err.message}") from None
            time.sleep(pause)
            continue
        if state is None:
            break
        if state is RELEASED:
            continue  # released in between: try again at once
        holder_now, expires = state.get("holder", "unknown"), float(state.get("expires", 0))
        if expires < time.time():
            printer(f"lock:     breaking the stale promotion lock of {name} ({holder_now}, "
                    f"expired {_utc(expires)})")
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock_name)
            continue
        if time.monotonic() > deadline:
            raise GymchurnError(
                f"another promotion or rollback of {name} is running ({holder_now}, since "
                f"{_utc(float(state.get('since', 0)))}); waited {float(wait_seconds):g} s. Run "
                "the command again when it has finished (or raise lock.wait_seconds). If that "
                f"process is gone, its lock is broken after {_utc(expires)} (lock.lease_seconds); "
                f"to free it sooner, delete the registered model {lock_name} (MLflow UI).")
        if not said:
            printer(f"lock:     waiting for another promotion of {name} ({holder_now})")
            said = True
        interruption_point()  # Ctrl-C while waiting: nothing is held yet
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)
    try:
        yield ModelLock(client, lock_name, token)
    finally:
        state = _lock_state(client, lock_name)
        if state is not None and state.get("token") == token:  # never another holder's lock
            client.delete_registered_model(lock_name)
