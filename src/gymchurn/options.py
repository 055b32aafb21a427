"""Option values the config types cannot check, refused before any work with one line naming the
key: a boolean given on the command line as anything but true/false, NaN or infinite numbers,
numbers outside their schema field's bounds (`gymchurn.schemas.number`), more tuning workers than
CPUs. `hydra_main` runs `check_options` on every command; `compose_config` does not (tests and
the cores' own checks build configs outside those bounds on purpose).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gymchurn.errors import GymchurnError
from gymchurn.schemas import CPUS, SCHEMAS


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _out_of_bounds(key: str, value, low, high, exclusive: bool) -> str | None:
    """What is wrong with `value` given the field's bounds, or None."""
    if high == CPUS:
        # Refused, not capped: the number typed is recorded with the run and sets each worker's
        # sampler seed, so it is not silently rewritten; the fix is one keystroke.
        cpus = usable_cpus()
        if value > cpus:
            return (f"{key}={value} is more than the {cpus} CPU(s) this command may use: each "
                    "worker is a process running trials, and more than one per CPU only wait "
                    f"for a turn. Use {key}={cpus} or fewer.")
        high = None
    too_low = low is not None and (value <= low if exclusive else value < low)
    too_high = high is not None and (value >= high if exclusive else value > high)
    if not (too_low or too_high):
        return None
    if low is not None and high is not None:
        allowed = f"{'strictly ' if exclusive else ''}between {low} and {high}"
    elif low is not None:
        allowed = f"above {low}" if exclusive else f"at least {low}"
    else:
        allowed = f"below {high}" if exclusive else f"at most {high}"
    return f"{key} must be {allowed}, got {value}"


def _problems(cfg: DictConfig, schema: type, prefix: str = ""):
    """(copied, message) for each typed number that is not finite or is outside its field's
    bounds; `copied` when the value is an interpolation of another key (e.g. tune.seed=${seed})."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key, kind = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _problems(cfg[f.name], kind, f"{key}.")
            continue
        if kind is Any or OmegaConf.is_missing(cfg, f.name):
            continue
        copied, value = OmegaConf.is_interpolation(cfg, f.name), cfg[f.name]
        pairs = ([(f"{key}.{k}", v) for k, v in value.items()] if isinstance(value, DictConfig)
                 else [(key, value)])
        for where, v in pairs:
            if isinstance(v, float) and not math.isfinite(v):
                yield copied, f"{where} must be a finite number, got {v}"
        bounds = f.metadata.get("bounds")
        problem = bounds and value is not None and _out_of_bounds(key, value, *bounds)
        if problem:
            yield copied, problem


def _field_type(schema: type, key: str):
    """The schema's type of a dotted key, or None when the key is free-form or unknown."""
    kind = schema
    for part in key.split("."):
        if not dataclasses.is_dataclass(kind):
            return None
        kind = typing.get_type_hints(kind).get(part)
    return kind


def unknown_key(full_key: str, schema: type) -> str:
    """"unknown key tune.n_trail: did you mean tune.n_trials?" for a key the typed section
    `schema` (a dataclass) does not have, with its keys when none is close."""
    import difflib

    parent, _, name = full_key.rpartition(".")
    keys = [f.name for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(name, keys, n=1)
    where = f"{parent}." if parent else ""
    return (f"unknown key {full_key}: " + (f"did you mean {where}{close[0]}?" if close else
            f"{parent or 'the config'} has {', '.join(keys)}."))


def _check_additions(schema: type, overrides: Sequence[str]) -> None:
    """`+key=value` into a typed section adds a key no code reads: refused, with the key meant
    (a misspelt `+tune.n_trail=5` ran with the default number of trials). Free-form sections
    (a model's estimator arguments, its search space) still take new keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_add() or override.package is not None:
            continue
        parent, _, name = override.key_or_group.rpartition(".")
        section = _field_type(schema, parent) if parent else schema
        if dataclasses.is_dataclass(section) and name not in {f.name for f in
                                                              dataclasses.fields(section)}:
            raise GymchurnError(f"{unknown_key(override.key_or_group, section)} (+ adds a key; "
                                "here none would read it)")


def _check_booleans(schema: type, overrides: Sequence[str]) -> None:
    """A boolean option on the command line is true or false (any case, or an interpolation)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if (override.is_delete() or override.is_sweep_override() or override.package is not None
                or _field_type(schema, override.key_or_group) is not bool):
            continue
        value = override.value()
        text = value.lower() if isinstance(value, str) else ""
        if not isinstance(value, bool) and text not in ("true", "false") and not text.startswith("${"):
            raise GymchurnError(f"{override.key_or_group} must be true or false, got {value!r}")


def check_options(cfg: DictConfig, config_name: str, overrides: Sequence[str] = ()) -> None:
    """What the types let through: booleans given as anything but true/false on the command line,
    NaN or infinite numbers, numbers outside their field's bounds (`number(...)`), more tuning
    workers than CPUs. Raises a GymchurnError naming the key; run by `hydra_main`."""
    schema = SCHEMAS[config_name]
    _check_additions(schema, overrides)
    _check_booleans(schema, overrides)
    # The key the user set first: `seed=-1` is reported as seed, not as tune.seed (${seed}).
    problems = sorted(_problems(cfg, schema), key=lambda problem: problem[0])
    if problems:
        raise GymchurnError(problems[0][1])
