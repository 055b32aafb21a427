"""Dependencies that say the truth: the lock satisfies pyproject.toml, and the optional
PostgreSQL driver, when missing, is named with the extra that installs it."""

from __future__ import annotations

import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from gymchurn.config import PROJECT_ROOT
from gymchurn.errors import GymchurnError
from gymchurn.probe import check_driver, missing_driver

URL = "postgresql://alice:s3cr3t@127.0.0.1:1/optuna"  # port 1: nothing answers there


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_lock_pins_a_version_within_every_bound_of_pyproject():
    """`make install` installs the lock, so a bound raised or a dependency added without
    `make lock` would go untested; pip check at install time sees only the runtime ones."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    pins = locked_versions()
    assert len(pins) > 50  # parsed as a lock, not an empty list
    for text in wanted:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        if name == "gymchurn":  # an extra pulling another one
            continue
        assert name in pins, f"{text} is not in requirements-lock.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements-lock.txt pins {name}=={pins[name]}, outside {text}: run make lock"


def test_the_installed_postgres_driver_and_other_stores_pass():
    assert missing_driver("postgresql://user@dbhost/optuna") is None  # the dev extra pulls it
    for url in ("sqlite:////tmp/x/optuna.db", "http://127.0.0.1:5000", "databricks", "garbage"):
        assert missing_driver(url) is None
        check_driver(url)


@pytest.fixture
def no_psycopg(monkeypatch):
    """An environment installed without the postgres extra: importing psycopg fails."""
    monkeypatch.setitem(sys.modules, "psycopg", None)


def test_without_the_driver_a_study_storage_names_the_extra(no_psycopg):
    from gymchurn.tuning import open_storage

    assert missing_driver(URL) == "psycopg"
    with pytest.raises(GymchurnError) as info:
        open_storage(URL)
    message = str(info.value)
    assert message == ("postgresql:// URLs need the database driver 'psycopg', which is not "
                       "installed: install the project's postgres extra: pip install -e "
                       "'.[postgres]' (make install does).")
    assert "s3cr3t" not in message


def test_without_the_driver_a_tracking_store_names_the_extra_before_probing(no_psycopg):
    from gymchurn.tracking import setup_experiment

    # Nothing answers at port 1 either: the driver is the first thing to fix.
    with pytest.raises(GymchurnError, match=r"pip install -e '\.\[postgres\]'"):
        setup_experiment({"uri": URL, "experiment": "gym-churn"})


def test_another_missing_driver_is_named_by_its_module():
    pytest.importorskip("sqlalchemy.dialects.mysql")
    if missing_driver("mysql://u@127.0.0.1/db") is None:
        pytest.skip("a MySQL driver is installed")
    with pytest.raises(GymchurnError, match="mysql:// URLs need the database driver 'MySQLdb'"):
        check_driver("mysql://u@127.0.0.1/db")
