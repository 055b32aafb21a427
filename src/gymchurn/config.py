"""Project paths, Hydra config composition (the typed schemas: gymchurn.schemas) and composition
errors worded for the user."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from gymchurn.errors import exit_on_user_error
from gymchurn.redact import mask_credentials
from gymchurn.schemas import CPUS, SCHEMAS, SEED_MAX, number  # noqa: F401  (re-exported)


def _find_project_root() -> Path:
    # An editable install keeps the package in <root>/src/gymchurn; otherwise use the CWD.
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").exists() else Path.cwd()


PROJECT_ROOT = _find_project_root()
CONFIG_DIR = PROJECT_ROOT / "conf"


# The schemas (gymchurn.schemas), stored when this module is imported, which every entrypoint
# does before Hydra composes.
for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(name=f"{_name}_schema", node=_schema)


# ---------------------------------------------------------------- composition


def register_resolvers() -> None:
    """`${root:}` in a config is the project root, so paths do not depend on the CWD."""
    if not OmegaConf.has_resolver("root"):
        OmegaConf.register_new_resolver("root", lambda: PROJECT_ROOT.as_posix())


def resolve_path(path: str | Path) -> Path:
    """A config path: absolute as given, relative ones against the project root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def compose_config(config_name: str = "config", overrides: list[str] | None = None) -> DictConfig:
    """Compose a config the way the entrypoints do, without running a Hydra job (tests, compare)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


# ---------------------------------------------------------------- errors: one line, not a traceback


def _type_name(tp: Any) -> str:
    # `int | None` -> "int or null"; containers as written, e.g. "dict[str, float]"
    args = typing.get_args(tp)
    if type(None) in args and len(args) == 2:
        return f"{_type_name(next(a for a in args if a is not type(None)))} or null"
    return tp.__name__ if isinstance(tp, type) and not args else str(tp).replace("typing.", "")


def config_error_message(err: BaseException) -> str:
    """What went wrong in composing a config, for the user.

    A value the schema rejects is one line naming the key, the type it needs and the value, e.g.
    "tune.n_trials must be int, got 'abc'" (OmegaConf's own text spans lines: full_key,
    object_type, ...); an unknown key is one line too, and so is an unknown option of a config
    group, with the choices. Other Hydra errors keep Hydra's text.
    """
    options = getattr(err, "options", None)  # an unknown option of a config group
    if options:
        # Hydra's first line ("In 'predict': Could not find 'reasons/some'") and the choices,
        # without the config search path it prints after them.
        return f"{str(err).splitlines()[0]}; choose one of: {', '.join(options)}"
    cause = err if isinstance(err, OmegaConfBaseException) else (err.__cause__ or err.__context__)
    if not isinstance(cause, OmegaConfBaseException) or not getattr(cause, "full_key", None):
        return str(err)
    # Hydra's part ("Error merging override ...", "In 'tune/default': ..."), without the OmegaConf
    # text it repeats for config files.
    context = "" if cause is err else " ".join(str(err).replace(str(cause), "").split()).rstrip(":")
    schema, key = cause.object_type, cause.key
    fields = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
    if isinstance(cause, ValidationError) and key in fields:
        value = "null" if cause.value is None else repr(cause.value)
        source = re.match(r"In '([^']+)'", context)  # a config file, not the command line
        return (f"{cause.full_key} must be {_type_name(fields[key])}, got {value}"
                + (f" (in conf/{source[1]}.yaml)" if source else ""))
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and dataclasses.is_dataclass(schema):
        # Hydra's advice here is to append the key with +, which would run with it unread.
        from gymchurn.options import unknown_key

        return unknown_key(cause.full_key, schema)
    first = str(cause).splitlines()[0]
    return f"{context} ({first})" if context else f"{cause.full_key}: {first}"


FULL_ERROR = "HYDRA_FULL_ERROR"  # "1": Hydra raises errors instead of printing them


def mask_saved_config(hydra_cfg) -> None:
    """Mask credentials in the record Hydra keeps of a run (`<run dir>/.hydra/*.yaml`: the
    command line as typed and the composed config), written before the task starts."""
    if not hydra_cfg.output_subdir:
        return
    for path in (Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir).glob("*.yaml"):
        text = path.read_text()
        if mask_credentials(text) != text:
            path.write_text(mask_credentials(text))


def hydra_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """`@hydra.main` on conf/<config_name>.yaml for the entrypoints, with composition errors (a
    value of the wrong type, an unknown key) as one `error: ...` line and exit code 2, and the
    checks the types cannot make (gymchurn.options: bounds, strict booleans) before the task.

    Hydra prints them over several lines plus a hint about HYDRA_FULL_ERROR. With its documented
    HYDRA_FULL_ERROR=1 it raises them instead, so that is set while Hydra composes and unset
    while the task runs: failures of the work itself are reported by Hydra exactly as before.
    A user who sets HYDRA_FULL_ERROR=1 gets Hydra's full traceback, as Hydra documents.
    """

    def decorator(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        def decorate(function):
            return hydra.main(config_path=str(CONFIG_DIR), config_name=config_name,
                              version_base="1.3")(function)

        @functools.wraps(task)
        def checked(cfg: DictConfig) -> Any:
            from hydra.core.hydra_config import HydraConfig

            from gymchurn.options import check_options

            mask_saved_config(HydraConfig.get())
            # The one user-error printer: one masked `error:` line, exit code 2.
            exit_on_user_error(check_options)(cfg, config_name, HydraConfig.get().overrides.task)
            return task(cfg)

        @functools.wraps(task)
        def job(cfg: DictConfig) -> Any:
            os.environ.pop(FULL_ERROR, None)
            result = checked(cfg)
            os.environ[FULL_ERROR] = "1"  # --multirun composes the next job after this one
            return result

        plain, quiet = decorate(checked), decorate(job)

        @functools.wraps(task)
        def main() -> Any:
            register_resolvers()
            before = os.environ.get(FULL_ERROR)
            if before == "1":
                return plain()
            os.environ[FULL_ERROR] = "1"
            try:
                return quiet()
            except (HydraException, OmegaConfBaseException) as err:
                print(f"error: {mask_credentials(config_error_message(err))}", file=sys.stderr,
                      flush=True)
                sys.exit(2)
            finally:
                os.environ.pop(FULL_ERROR, None)
                if before is not None:
                    os.environ[FULL_ERROR] = before

        return main

    return decorator

