"""One kind of error for problems a user can fix, and the wrapper that reports them."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class GymchurnError(Exception):
    """A problem the user caused and can fix; the message names the problem and the fix."""


def exit_on_user_error(func: F) -> F:
    """Turn a GymchurnError into one line on stderr and exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except GymchurnError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def raise_keyboard_interrupt(signum, frame):
    """Signal handler: SIGTERM ends work the way Ctrl-C does (runs marked KILLED, studies kept)."""
    raise KeyboardInterrupt(f"signal {signum}")


def exit_on_interrupt(func: F) -> F:
    """Treat SIGTERM like Ctrl-C, and end either with exit code 130 instead of a traceback.

    The work itself reports what it kept (see experiment.train); this only ends the process.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        # Python leaves SIGINT ignored when the parent ignored it (a background job of a script,
        # a pytest-xdist worker): Ctrl-C must still stop the work the same way.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
