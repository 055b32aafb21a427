"""Registry stage: save pipelines safely, log them as MLflow models, version them with aliases.

Shared by the churn classifier and the segmentation model. Aliases, not stages: a new version
is the `challenger`; promotion moves `champion` (see DESIGN.md), one process at a time per
model (gymchurn.lifecycle.lock). A logged model carries the data rules it was trained under, so
the served model checks its input the way `make predict` does (gymchurn.serving).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from gymchurn.errors import GymchurnError

_ALWAYS_TRUSTED_ROOTS = {"collections"}  # OrderedDict inside LightGBM's sklearn wrapper


# Third-party packages the logged gymchurn code imports when the model loads and predicts
# (input checks: gymchurn.data with its config and pandera): measured by the clean-environment
# test (tests/lifecycle/test_portable.py), which fails if a module outside the requirements is
# imported.
SERVED_CODE_MODULES = ["hydra", "omegaconf", "pandera"]

LOCK_SUFFIX = ".promotion-lock"  # `<model>.promotion-lock`: see gymchurn.lifecycle.lock


def pipeline_module_roots(pipeline) -> set[str]:
    """Top-level packages of every step of a fitted pipeline (and of its final estimator)."""
    roots = {type(pipeline).__module__.split(".")[0]}
    for _, step in getattr(pipeline, "steps", []):
        roots.add(type(step).__module__.split(".")[0])
    return roots


def save_pipeline(pipeline, path: str | Path) -> list[str]:
    """Save with skops and return the types to trust when loading it.

    The list is derived from the fitted pipeline: every type skops does not trust by default
    must come from a package the pipeline's own steps come from; anything else (a lambda, an
    unexpected class) is refused here, before it can reach the registry.
    """
    import skops.io as sio  # here, not above: its import takes seconds (it indexes scikit-learn),
    # and commands that only read or move aliases (promote, its errors) never need it

    sio.dump(pipeline, path)
    untrusted = sio.get_untrusted_types(file=path)
    allowed = pipeline_module_roots(pipeline) | _ALWAYS_TRUSTED_ROOTS
    refused = [t for t in untrusted if t.split(".")[0] not in allowed or t.startswith("builtins.")]
    if refused:
        raise GymchurnError(
            f"the pipeline holds types that cannot be saved safely: {refused}. Write "
            "transformers as importable classes or named functions, never lambdas."
        )
    return sorted(untrusted)


def model_settings(context) -> dict:
    """A served model's settings (threshold, segment names, data rules, trusted types): the
    `settings` artifact of versions logged since issue 15, else the `model_config` of older
    ones (which run their own copy of served.py anyway)."""
    import json

    if "settings" in (context.artifacts or {}):
        return json.loads(Path(context.artifacts["settings"]).read_text())
    return dict(context.model_config or {})


def load_pipeline(path: str | Path, trusted_types: list[str]):
    """Load a skops file, trusting only the types recorded when it was saved."""
    import skops.io as sio  # see save_pipeline

    return sio.load(path, trusted=list(trusted_types))


@functools.cache
def distributions_by_module() -> Mapping[str, list[str]]:
    """importlib's module -> distributions map: it reads every installed package's file list
    (about a second), so once per process (what is installed does not change during a run)."""
    return metadata.packages_distributions()


def pip_requirements(pipeline) -> list[str]:
    """Pinned requirements of the model: MLflow, pandas, skops and the pipeline's libraries.

    The distribution is looked up per module (xgboost may be installed as xgboost-cpu).
    Written out so MLflow does not load the model again to infer them.
    """
    providers = distributions_by_module()
    modules = ["mlflow", "pandas", "numpy", "skops", *SERVED_CODE_MODULES]
    modules += sorted(pipeline_module_roots(pipeline) - {"gymchurn", "builtins"})
    requirements = []
    for module in modules:
        dists = providers.get(module, [])
        # The distribution named like the module wins (mlflow over mlflow-skinny).
        dist = module if module in dists else (dists[0] if dists else None)
        if dist:
            requirements.append(f"{dist}=={metadata.version(dist)}")
    return sorted(set(requirements))


def log_pipeline_model(
    pipeline,
    model_code: Path,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    model_config: Mapping,
    name: str = "model",
):
    """Log `pipeline` as a pyfunc model defined by the file `model_code` (models from code).

    `output_example` is what the model returns for `input_example`; with it they make the
    model's signature. `model_config` is the served model's settings (`model_settings`);
    its "data_schema" (`gymchurn.serving.data_schema`) is the data rules the served model checks
    its input with: those the model was trained under.
    """
    import json

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.skops"
        trusted = save_pipeline(pipeline, path)
        # The settings travel as an artifact, not as MLflow's `model_config`, which MLflow also
        # logs as run parameters: internal entries (trusted types, the data rules) would crowd
        # the runs' compare view.
        settings = Path(tmp) / "settings.json"
        settings.write_text(json.dumps({**model_config, "skops_trusted_types": trusted}, indent=1))
        signature = infer_signature(input_example, output_example)
        if model_config.get("data_schema"):  # the model checks its input itself
            signature = checked_by_the_model(signature)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(model_code),
            artifacts={"pipeline": str(path), "settings": str(settings)},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(pipeline),
            code_paths=[package_copy(Path(tmp))],
        )


def checked_by_the_model(signature):
    """The signature with every input column declared `AnyType`: named and required, its values
    passed as sent. The model checks them itself with the data rules it was trained under
    (gymchurn.serving.checked_input), as `make predict` does. Typed columns let MLflow decide
    first, and its cast is not a check: on the REST path a `long` column sent as 6.5 was cast
    to 6 and scored, and a Python caller's int64 table was refused for a `double` column."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec(AnyType(), name) for name in signature.inputs.input_names()])
    return ModelSignature(inputs=inputs, outputs=signature.outputs)


def package_copy(folder: Path) -> str:
    """A copy of the gymchurn package (sources and templates, no bytecode) in `folder`, logged
    as the model's code (MLflow `code_paths`): the model then loads wherever its requirements
    are installed, without this repository, as `mlflow models serve`, `build-docker` and
    `spark_udf` need. Code rather than a wheel: the model carries exactly the code it was
    trained with, and needs no package index or file beside it to install.

    Where gymchurn is already imported (this repository), its own modules keep being used:
    MLflow only puts the copy on sys.path, and a package's submodules load from its own folder.
    """
    import shutil

    import gymchurn

    target = folder / "gymchurn"
    shutil.copytree(Path(gymchurn.__file__).parent, target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def register_version(model_uri: str, name: str, tags: Mapping, alias: str | None):
    """Register `model_uri` as a new version of `name`, tag it, and point `alias` at it."""
    version = mlflow.register_model(
        model_uri, name, tags={k: str(v) for k, v in tags.items()}
    )
    if alias:
        set_alias(name, alias, version.version)
    return version


# ---------------------------------------------------------------- reading the registry
# Used by promotion, batch scoring and serving: every lookup a user can get wrong (a model
# name, an alias, a version number) ends in a GymchurnError naming what exists instead.


def registered_model(name: str):
    """The registered model `name`, or an error listing the models that are registered."""
    client = MlflowClient()
    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise GymchurnError(f"could not read the model registry: {err.message}") from err
    names = sorted(m.name for m in client.search_registered_models()
                   if not m.name.endswith(LOCK_SUFFIX))  # a promotion's lock is not a model
    known = ", ".join(names) if names else "none yet (run `make experiment` first)"
    raise GymchurnError(
        f"no registered model named '{name}' in {mlflow.get_tracking_uri()}. "
        f"Registered models: {known}."
    )


def resolve_version(name: str, alias: str | None = None, version: str | int | None = None):
    """The ModelVersion given by an explicit `version` number, else by `alias`.

    Raises a GymchurnError that names the aliases and versions that do exist.
    """
    model = registered_model(name)
    client = MlflowClient()
    aliases = {alias: str(v) for alias, v in (model.aliases or {}).items()}
    if version is not None:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        if str(version).strip().isdigit() and int(version) in versions:
            return client.get_model_version(name, str(int(version)))
        raise GymchurnError(
            f"'{name}' has no version {version}. Versions: {versions or 'none'}."
        )
    if alias in aliases:
        return client.get_model_version(name, aliases[alias])
    shown = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
    raise GymchurnError(
        f"'{name}' has no version with alias @{alias}. Aliases: {shown}. "
        "Give a version (version=N), or promote one first (`make promote`)."
    )


def alias_versions(name: str) -> dict[str, str]:
    """alias -> version number (as text) of a registered model (empty if it has none)."""
    return {alias: str(v) for alias, v in (registered_model(name).aliases or {}).items()}


def newest_version(name: str):
    """The highest version number of `name`, or None."""
    versions = MlflowClient().search_model_versions(f"name='{name}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def alias_or_newest(name: str, aliases: Sequence[str]):
    """(ModelVersion, how it was chosen): the version the first of `aliases` that is set points
    at, else the newest version.

    Readers (scoring's segments, the report) fall back to the newest version so a first run
    works before any promotion; the note says so, because the newest is not necessarily the best.
    """
    registered_model(name)  # a clear error when the model does not exist at all
    set_aliases = alias_versions(name)
    for alias in aliases:
        if alias in set_aliases:
            return resolve_version(name, alias=alias), f"@{alias}"
    version = newest_version(name)
    if version is None:
        raise GymchurnError(f"'{name}' is registered but has no versions.")
    wanted = " or ".join(f"@{a}" for a in aliases)
    return version, f"the newest version: no {wanted} yet; `make promote` sets one"


def load_version(name: str, version: str | int):
    """Load a registered version as a pyfunc model (the object `mlflow models serve` uses)."""
    uri = f"models:/{name}/{version}"
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError, ImportError) as err:
        gone = getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
        if gone or isinstance(err, FileNotFoundError):
            raise GymchurnError(missing_files_message(name, version)) from None
        message = getattr(err, "message", None) or str(err)
        raise GymchurnError(f"could not load {uri}: {message}") from err


def missing_files_message(name: str, version: str | int) -> str:
    """Which version lost its files, where they were, and what to do about it."""
    client = MlflowClient()
    try:
        where = client.get_model_version_download_uri(name, str(version))
        aliases = client.get_model_version(name, str(version)).aliases or []
    except Exception:  # noqa: BLE001 - only the message's details depend on it
        where, aliases = "its artifact location", []
    shown = "".join(f" @{a}" for a in sorted(aliases))
    return (f"{name} version {version}{shown} is registered but its model files are gone from "
            f"{where} (deleted or moved). Restore that folder, or use another version: score "
            f"with version=N, or make another version champion with `make promote version=N "
            f"force=true model_name={name}`.")


def load_churn_model(name: str, version: str | int):
    """The served churn model of a registered version (gymchurn.churn.served: pipeline,
    threshold, settings), or an error when the version is not a churn classifier."""
    model = load_version(name, version).unwrap_python_model()
    pipeline = getattr(model, "pipeline", None)
    if pipeline is None or not hasattr(pipeline, "predict_proba"):
        raise GymchurnError(
            f"{name} version {version} is not a churn classifier (its model is "
            f"{type(model).__name__}). Use model_name=gym-churn-classifier."
        )
    return model


def load_fitted_pipeline(name: str, version: str | int):
    """(fitted sklearn pipeline, decision threshold) of a registered churn classifier version."""
    model = load_churn_model(name, version)
    return model.pipeline, float(model.threshold)


ALIAS_ATTEMPTS = 3


def set_alias(name: str, alias: str, version: str | int | None) -> None:
    """Point `alias` at `version`, or remove the alias when `version` is None."""
    client = MlflowClient()
    if version is None:
        if alias in alias_versions(name):
            client.delete_registered_model_alias(name, alias)
        return
    # MLflow's SQL store sets an alias by reading it and then inserting or updating it, so two
    # processes that point one alias at once (two experiments both registering a challenger)
    # can both insert, and the later one fails its unique constraint. By then the row exists,
    # and the retry updates it: the alias ends at the later write, as if they had queued.
    for attempt in range(ALIAS_ATTEMPTS):
        try:
            client.set_registered_model_alias(name, alias, str(version))
            return
        except MlflowException as err:
            if attempt == ALIAS_ATTEMPTS - 1 or not lost_an_insert_race(err):
                raise


def lost_an_insert_race(err: Exception) -> bool:
    """Whether a store error is a unique-constraint clash (SQLite's or PostgreSQL's wording,
    also when a tracking server passes it on)."""
    text = str(err)
    return "UNIQUE constraint failed" in text or "duplicate key value" in text


def set_version_tags(name: str, version: str | int, tags: Mapping[str, str],
                     replacing: str | None = None) -> None:
    """Set `tags` on a version; with `replacing` (a key prefix such as "promotion."), first
    delete the version's other tags of that prefix, so they describe one decision, not what is
    left of several (each decision's full record is its own run)."""
    client = MlflowClient()
    if replacing:
        for key in client.get_model_version(name, str(version)).tags:
            if key.startswith(replacing) and key not in tags:
                client.delete_model_version_tag(name, str(version), key)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def version_model_id(version) -> str | None:
    """The logged model (MLflow 3 LoggedModel) behind a registered version: its `model_id`, or
    the id its `models:/m-...` source names (versions registered from a model URI leave
    `model_id` empty)."""
    source = str(getattr(version, "source", "") or "")
    named = source[len("models:/"):] if source.startswith("models:/m-") else None
    return getattr(version, "model_id", None) or named


def describe_version(version) -> str:
    """"gym-churn-classifier version 3 @champion (lgbm/engineered)", for printed lines."""
    tags = version.tags or {}
    aliases = "".join(f" @{a}" for a in sorted(version.aliases or []))
    what = "/".join(tags[k] for k in ("model_family", "feature_set") if k in tags)
    return f"{version.name} version {version.version}{aliases}" + (f" ({what})" if what else "")


def find_segmentation_model(name: str):
    """(pyfunc model, description) of the segmentation to use alongside the churn model:
    @champion, else @challenger, else the newest version; or (None, why there is none)."""
    try:
        version, how = alias_or_newest(name, ("champion", "challenger"))
    except GymchurnError as err:
        return None, f"segment columns left out: {err}"
    return load_version(name, version.version), f"{describe_version(version)} ({how})"


def open_registry(tracking_cfg: Mapping, writable: bool = False) -> None:
    """Point MLflow at the configured store; a local store must already exist (scoring and
    promotion never create an empty one by accident), be an intact MLflow database, and be
    writable when the command writes (`writable`: promotion). Reading needs no write access:
    SQLite opens a write-protected file read-only, and MLflow writes on opening only into a
    database without its tables, which `check_sqlite_store` refuses first."""
    from gymchurn.probe import check_reachable
    from gymchurn.tracking import quiet_libraries, sqlite_path

    quiet_libraries()
    uri = str(tracking_cfg["uri"])
    db = sqlite_path(uri)
    if db is not None:
        if not db.exists():
            raise GymchurnError(
                f"no MLflow store at {db}: run `make experiment` first, or set tracking.uri=..."
            )
        check_sqlite_store(db, writable)
    else:  # MLflow would retry an absent server for minutes: fail in seconds instead
        check_reachable(uri, "MLflow tracking server or database",
                        "Start it, or point tracking.uri= (or MLFLOW_TRACKING_URI) at one that runs.")
    mlflow.set_tracking_uri(uri)


def check_sqlite_store(db: Path, writable: bool = False) -> None:
    """A GymchurnError, before MLflow opens `db`, when it is empty, damaged (truncated,
    overwritten), not an MLflow store, or read-only while `writable` is needed. MLflow would
    create its tables in an empty or foreign file, and a damaged one fails deep inside
    SQLAlchemy. SQLite's quick_check reads the whole file: a few ms per MB."""
    fix = (f"Restore {db.name} from a backup, or move it away and run `make experiment` to "
           "start a new store (or set tracking.uri=...)")
    if not db.is_file() or db.stat().st_size == 0:
        raise GymchurnError(f"the MLflow store {db} is {'empty' if db.is_file() else 'not a file'}"
                            f", not an MLflow database. {fix}.")
    if not os.access(db, os.R_OK):
        raise GymchurnError(f"the MLflow store {db} cannot be read by this user (permission "
                            "denied). Ask its owner for read access, or set tracking.uri=...")
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            integrity = con.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as err:
        raise GymchurnError(f"the MLflow store {db} is damaged or not a database ({err}). "
                            f"{fix}.") from None
    if integrity != "ok":
        raise GymchurnError(f"the MLflow store {db} is damaged ({integrity}). {fix}.")
    if not {"alembic_version", "registered_models", "runs"} <= tables:
        raise GymchurnError(f"{db} is an SQLite database but not an MLflow store (no MLflow "
                            f"tables). Set tracking.uri= to the project's store. {fix}.")
    if writable and not (os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)):
        raise GymchurnError(f"the MLflow store {db} is read-only here, and this command writes "
                            "to it (aliases, tags, a run). Run it as a user who may write to "
                            f"{db.parent}, or where the store is writable.")
