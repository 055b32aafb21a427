"""One kind of error for problems a user can fix, and the wrapper that reports them."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TypeVar

from gymchurn.redact import mask_credentials, mask_log_records

F = TypeVar("F", bound=Callable)


class GymchurnError(Exception):
    """A problem the user caused and can fix; the message names the problem and the fix."""


def looked_for(path) -> str:
    """A path as given, and the folder a relative one was looked for in (`make -C` or another
    shell's folder can make it differ from where the user thinks)."""
    from pathlib import Path

    path = Path(path)
    return str(path) if path.is_absolute() else f"{path} (looked in {Path.cwd()})"


def exit_on_user_error(func: F) -> F:
    """Turn a GymchurnError into one line on stderr and exit code 2 instead of a traceback.

    Credentials in URLs (a password in tune.storage or MLFLOW_TRACKING_URI) are masked in that
    line, in what is logged while `func` runs, and in the traceback of any other error, which
    is printed here (exit code 1) so Hydra does not print it, nor its overrides, unmasked.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        mask_log_records()
        try:
            return func(*args, **kwargs)
        except GymchurnError as err:
            print(f"error: {mask_credentials(str(err))}", file=sys.stderr, flush=True)
            sys.exit(2)
        except Exception as err:
            text = "".join(traceback.format_exception(err))
            print(mask_credentials(text), file=sys.stderr, end="", flush=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------- stopping at a safe point
#
# Ctrl-C and SIGTERM stop the work at the next safe point, never where the signal lands: an
# exception raised at an arbitrary line cut writes to the MLflow store or the Optuna storage in
# half (seen: a version registered without its alias; a run hung on a SQLite lock its own cut
# write still held) and corrupted libraries' native state (seen: LightGBM freed a booster
# twice, and the process died with a segmentation fault). The work calls
# `interruption_point()` where stopping is clean: between folds, trials and stages; the
# recorder has none, so a run is never half-recorded. A second signal stops the work at once,
# wherever it is: the way out for a user who will not wait.

_signals: dict = {"received": False, "pending": None}  # pending: received, not yet acted on


def _on_signal(signum, frame):
    if _signals["received"]:  # the second signal, even after the first was acted on
        raise KeyboardInterrupt(f"signal {signum}")
    _signals.update(received=True, pending=signum)
    # os.write: print() is not safe inside a signal handler (the interrupted code may be printing).
    os.write(2, b"\nstopping at the next safe point (Ctrl-C again to stop at once) ...\n")


def install_interrupt_handlers(sigint: bool = True) -> dict:
    """Ctrl-C and SIGTERM stop the work at its next `interruption_point()` (see above); return
    the handlers they replace. `sigint=False` (tuning workers): Ctrl-C in a terminal reaches the
    whole process group, and a worker must stop only when its parent tells it to (SIGTERM),
    or the parent's SIGTERM would be its second signal and stop it mid-line."""
    _signals.update(received=False, pending=None)
    # Python leaves SIGINT ignored when the parent ignored it (a background job of a script,
    # a pytest-xdist worker): Ctrl-C must still stop the work the same way.
    handlers = {signal.SIGTERM: _on_signal, signal.SIGINT: _on_signal if sigint else signal.SIG_IGN}
    return {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}


def interruption_point() -> None:
    """Stop here (KeyboardInterrupt) if Ctrl-C or SIGTERM arrived since the last safe point."""
    signum = _signals["pending"]
    if signum is not None:
        _signals["pending"] = None
        raise KeyboardInterrupt(f"signal {signum}")


HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM (delivered when the block ends). Processes started inside
    inherit the held mask: they release it once their own handlers are installed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)


def exit_on_interrupt(func: F) -> F:
    """Stop on Ctrl-C or SIGTERM at the next safe point, with exit code 130, no traceback.

    The work itself reports what it kept (see tracking.tracked_run); this only ends the process.
    A signal that arrived after the last safe point still ends it with 130, after the work.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        replaced = install_interrupt_handlers()
        try:
            result = func(*args, **kwargs)
            if _signals["pending"] is not None:  # after the last safe point: the work is done
                print("interrupted after the work had finished: everything above was kept.",
                      file=sys.stderr, flush=True)
                raise SystemExit(130)
            return result
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        finally:  # the next job of a multirun, or a caller in this process, gets its own back
            for sig, handler in replaced.items():
                signal.signal(sig, handler)

    return wrapper  # type: ignore[return-value]
