"""Fail in seconds when the server behind a store URI does not answer.

MLflow retries an unanswered HTTP request for minutes (seen: 255 s to report a tracking server
that was not running) and its SQL store retries creating its engine 15 times; both are right
for a server that is busy for a moment, wrong for one that is not there. So before the first
call a store is probed once, with a short timeout, and the error names the address (its
credentials masked) and the fix. MLflow's own retries stay as they are for the calls that
follow (env MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT tune them).
"""

from __future__ import annotations

import os
import socket
import ssl
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from gymchurn.errors import GymchurnError
from gymchurn.redact import mask_credentials

PROBE_SECONDS = 5.0
CONNECT_SECONDS = 10  # a database connection (TCP, TLS, authentication) on a busy server
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}


def unreachable_reason(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why nothing answers at `uri` (http(s): an HTTP request to its /health; PostgreSQL or
    MySQL: a TCP connection to its host and port), or None when something does.

    Any HTTP answer counts, even an error (a proxy with authentication may refuse /health, and
    MLflow then says what is wrong), but a gateway error (502, 503, 504). Other schemes
    (sqlite, databricks, ...) are not probed.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]  # postgresql+psycopg -> postgresql
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as err:  # a port that is not a number
        return str(err)
    try:
        if scheme in ("http", "https"):
            # Without the user info (urllib would take it for part of the host); through the
            # same proxies (HTTP_PROXY, NO_PROXY) MLflow's requests would use.
            host = parts.netloc.rpartition("@")[2]
            health = f"{scheme}://{host}{parts.path.rstrip('/')}/health"
            urllib.request.urlopen(health, timeout=timeout).close()
        else:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except urllib.error.HTTPError as err:
        # 502-504: a proxy answered for a server that did not (MLflow would retry them too).
        return f"HTTP {err.code} {err.reason}" if err.code in (502, 503, 504) else None
    except urllib.error.URLError as err:
        if isinstance(err.reason, ssl.SSLError):
            return None  # it answered; MLflow has its own certificate settings
        return str(err.reason)
    except (OSError, ValueError) as err:
        return str(err) or type(err).__name__
    return None


def missing_driver(url: str) -> str | None:
    """The module SQLAlchemy needs to talk to the database at `url` when it is not installed
    (psycopg for postgresql://), else None; None too for URLs that are no SQLAlchemy database
    (http://, databricks)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        return err.name or str(err)
    return None


def check_driver(url: str) -> None:
    """Raise a GymchurnError naming what to install when the database driver for `url` is
    missing. The PostgreSQL driver is an optional dependency (the `postgres` extra): only
    shared studies and tracking stores use it, and without this check Optuna or MLflow would
    fail deep inside SQLAlchemy."""
    module = missing_driver(url)
    if module is None:
        return
    scheme = urlsplit(url).scheme
    if module == "psycopg":
        fix = "install the project's postgres extra: pip install -e '.[postgres]' (make install does)"
    else:
        fix = f"install the package that provides the Python module '{module}'"
    raise GymchurnError(f"{scheme}:// URLs need the database driver '{module}', which is not "
                        f"installed: {fix}.")


def check_reachable(uri: str, what: str, fix: str, timeout: float = PROBE_SECONDS) -> None:
    """Raise a GymchurnError naming `what` (e.g. "MLflow tracking server"), its masked address
    and `fix` when nothing answers at `uri` within `timeout` seconds; first, for a database
    URI, naming the driver to install when it is missing (see check_driver)."""
    check_driver(uri)
    reason = unreachable_reason(uri, timeout)
    if reason is not None:
        raise GymchurnError(f"no {what} answers at {mask_credentials(uri)} ({reason}). {fix}")


def sql_connect_args(url: str, timeout: int = CONNECT_SECONDS) -> dict:
    """SQLAlchemy `connect_args` that bound the wait for a PostgreSQL server (psycopg waits
    130 s for a host that drops packets), unless the URL or PGCONNECT_TIMEOUT sets one."""
    if not url.startswith("postgresql") or "connect_timeout" in url \
            or "PGCONNECT_TIMEOUT" in os.environ:
        return {}
    return {"connect_timeout": timeout}
