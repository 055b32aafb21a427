"""What the Makefile runs: make variables -> Hydra overrides, with no shell in between.

`make predict input="my file.csv"` must pass the value to Python as it was typed: pasted into
a recipe line, a value is shell code (`input="x; touch FILE"` ran the command). So the
Makefile exports every variable, unexpanded, as GYMCHURN_MAKE_<name> and runs

    python -m gymchurn.make_args [--rename VAR=KEY] [--args-only] TARGET [FIXED ARGS...]

which reads them from the environment and replaces itself (exec) with
`python -m TARGET` (or `python TARGET` for a .py file) + FIXED ARGS + the overrides:

- `name=value` for each non-empty variable of GYMCHURN_MAKE_VARS, in that order. The value is
  Hydra override syntax, as on the command line (`model=lgbm,xgb` is a sweep, `force=true` a
  bool), except for the free-text variables (paths, a reason, a model name), which are quoted
  so any character, `${...}` included, reaches the config as written;
- then `args`, split like a shell would split it (shlex), but by Python: quotes group words,
  nothing is run or expanded.

`--rename tune=segment_tune@tune` writes the variable `tune` as that key (make segment);
`--args-only` passes only `args` (make bench).
"""

from __future__ import annotations

import os
import re
import shlex
import sys

PREFIX = "GYMCHURN_MAKE_"
VARS = PREFIX + "VARS"  # the variable names, in order (the Makefile's OVERRIDE_VARS)
ARGS = "args"
# Values taken as text, never as Hydra syntax: a path may hold ',', '(', '=', '$' or spaces.
LITERAL = {"input", "output", "output_dir", "name", "note", "reason", "model_name"}


def hydra_literal(value: str) -> str:
    """`value` as a Hydra quoted string that the config reads back exactly as `value`.

    Hydra's rule for quoted strings: a run of backslashes before a quote (or before the
    closing quote) is doubled, and the quote escaped (what hydra's QuotedString.with_quotes
    does; importing Hydra here would cost a third of a second per make command). `${` is
    escaped for OmegaConf, so it is not resolved as an interpolation.
    """
    value = re.sub(r"(\\*)\$\{", lambda m: m[1] * 2 + r"\${", value)
    value = re.sub(r"(\\+)(?='|\Z)", lambda m: m[1] * 2, value)
    return "'" + value.replace("'", r"\'") + "'"


def overrides(environ: dict[str, str], renames: dict[str, str] | None = None,
              args_only: bool = False) -> list[str]:
    """The Hydra overrides (then the `args` words) the make variables in `environ` ask for."""
    from gymchurn.errors import GymchurnError

    renames = renames or {}
    result = []
    names = [] if args_only else environ.get(VARS, "").split()
    for name in names:
        value = environ.get(PREFIX + name, "")
        if value:
            value = hydra_literal(value) if name in LITERAL else value
            result.append(f"{renames.get(name, name)}={value}")
    try:
        result += shlex.split(environ.get(PREFIX + ARGS, ""))
    except ValueError as err:  # an unbalanced quote
        raise GymchurnError(
            f"args={environ.get(PREFIX + ARGS)!r} cannot be split into words ({err}); "
            "close the quote, e.g. args=\"key='two words'\"."
        ) from err
    return result


def command(argv: list[str], environ: dict[str, str]) -> list[str]:
    """The Python command line asked for by `argv` (this module's arguments) and by the make
    variables exported in `environ`."""
    renames, args_only = {}, False
    while argv and argv[0] in ("--rename", "--args-only"):
        if argv[0] == "--args-only":
            args_only, argv = True, argv[1:]
        else:
            name, _, key = argv[1].partition("=")
            renames[name], argv = key, argv[2:]
    target, fixed = argv[0], argv[1:]
    run = [target] if target.endswith(".py") else ["-m", target]
    return [sys.executable, *run, *fixed, *overrides(environ, renames, args_only)]


def main() -> None:
    from gymchurn.errors import GymchurnError
    from gymchurn.redact import mask_credentials

    try:
        argv = command(sys.argv[1:], dict(os.environ))
    except GymchurnError as err:
        print(f"error: {mask_credentials(str(err))}", file=sys.stderr, flush=True)
        sys.exit(2)
    # What make used to echo: the command to rerun without make (quoted, credentials masked).
    shown = [os.path.relpath(argv[0]) if argv[0].startswith(os.getcwd()) else argv[0], *argv[1:]]
    print(mask_credentials(shlex.join(shown)), flush=True)
    # exec: the command is this process (same pid, signals, exit code), as if make ran it.
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
