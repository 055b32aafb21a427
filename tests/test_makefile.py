"""Make variables are data, never shell: hostile values reach Python verbatim and run nothing,
and every target's documented usage still becomes the same Hydra overrides.

`make` runs here for real, with `-o .venv/.installed` (never reinstall) and without the
MAKEFLAGS of a `make test` around it. Commands that run Python fail on a bad value before
they touch any store; MLFLOW_TRACKING_URI points into tmp_path anyway (conftest).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from gymchurn import make_args
from gymchurn.config import PROJECT_ROOT, compose_config

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")

PYTHON_TARGETS = ["experiment", "compare", "segment", "promote", "rollback", "predict", "report",
                  "bench"]
VARIABLES = ["model", "features", "tune", "data", "tracking", "experiment", "threshold", "seed",
             "workers", "clustering", "input", "output", "reasons", "version", "force",
             "model_name", "reason", "args"]


def make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(PROJECT_ROOT),
                           "-o", ".venv/.installed", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def hostile(tmp_path: Path) -> dict[str, str]:
    """Values that run a command if a shell (or make) ever interprets them."""
    pwned = tmp_path / "pwned"
    return {
        "semicolon": f"x; touch {pwned}; echo",
        "substitution": f"$(touch {pwned})",
        "backticks": f"`touch {pwned}`",
        "make function": f"$(shell touch {pwned})",
        "quotes and space": f"it's \"{tmp_path}/my dir\" && touch {pwned}",
    }


def python_command(target: str, *assignments: str) -> list[str]:
    """The Python command `make target assignments` runs, as gymchurn.make_args builds it from
    what make exports (read with an extra target given by --eval) and the recipe line."""
    exported = make("--eval=_gymchurn_env: ; @env -0", "_gymchurn_env", *assignments)
    assert exported.returncode == 0, exported.stderr
    environ = dict(item.split("=", 1) for item in exported.stdout.split("\0") if "=" in item)
    dry = make("-n", target, *assignments)
    assert dry.returncode == 0, dry.stderr
    recipe = shlex.split(dry.stdout.strip().splitlines()[-1])
    assert recipe[1:3] == ["-m", "gymchurn.make_args"], dry.stdout  # no value in the line
    return make_args.command(recipe[3:], environ)[1:]  # without the interpreter's path


def test_no_value_ever_enters_a_recipe_line(tmp_path):
    attacks = list(hostile(tmp_path).values())
    values = [f"{v}=MARK {attacks[i % len(attacks)]}" for i, v in enumerate(VARIABLES)]
    for target in PYTHON_TARGETS:
        dry = make("-n", target, *values)
        assert dry.returncode == 0, dry.stderr
        assert "MARK" not in dry.stdout and "touch" not in dry.stdout, (target, dry.stdout)


@pytest.mark.slow
def test_hostile_values_reach_python_verbatim_and_run_nothing(tmp_path):
    values = hostile(tmp_path)
    space = tmp_path / "my dir" / "new customers.csv"  # not there: the error names it
    runs = {name: ["predict", f"input={value}"] for name, value in values.items()}
    runs["a path with a space"] = ["predict", f"input={space}"]
    runs["args"] = ["predict", f"args='input={values['semicolon']}' reasons=all"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    procs = {name: subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-o", ".venv/.installed", *a],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name, a in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode != 0, (name, out, err)
        value = {"a path with a space": str(space), "args": values["semicolon"]}.get(name)
        value = value or values[name]
        assert err.startswith("error: ") and value in err, (name, err)
    assert not (tmp_path / "pwned").exists()


def test_documented_usages_become_the_same_overrides(tmp_path):
    out = tmp_path / "out dir" / "it's.csv"
    assert python_command("experiment", "model=lgbm") == ["-m", "gymchurn.experiment", "model=lgbm"]
    assert python_command("experiment", "model=xgb", "features=raw", "tune=fast") == [
        "-m", "gymchurn.experiment", "model=xgb", "features=raw", "tune=fast"]
    compare = python_command("compare", "model=lgbm,xgb", "features=engineered", "tune=fast")
    assert compare == ["-m", "gymchurn.experiment", "--multirun", "experiment=compare",
                       "model=lgbm,xgb", "features=engineered", "tune=fast"]
    assert OverridesParser.create().parse_override(compare[4]).is_sweep_override()
    assert python_command("segment", "tune=fast", "clustering=gmm") == [
        "-m", "gymchurn.segment", "segment_tune@tune=fast", "clustering=gmm"]
    assert python_command("rollback") == ["-m", "gymchurn.promote", "action=rollback"]
    assert python_command("bench", "args=--quick", "model=lgbm") == ["benchmarks/bench.py", "--quick"]

    promote = python_command("promote", "version=7", "force=true", "reason=two words")
    assert promote[:2] == ["-m", "gymchurn.promote"]
    cfg = compose_config("promote", promote[2:])
    assert (cfg.version, cfg.force, cfg.reason) == (7, True, "two words")

    predict = python_command("predict", "input=$(touch x) `y`.csv", f"output={out}",
                             "reasons=all")
    cfg = compose_config("predict", predict[2:])
    assert (cfg.input, cfg.output, cfg.reasons.rows) == ("$(touch x) `y`.csv", str(out), "all")
    native = compose_config("predict", python_command("predict", "input=x.csv",
                                                      "args=reasons.method=native")[2:])
    assert (native.reasons.rows, native.reasons.method) == ("flagged", "native")

    report = python_command("report", f"args='output_dir={tmp_path}/a b' seed=3")
    cfg = compose_config("report", report[2:])
    assert (cfg.output_dir, cfg.seed) == (f"{tmp_path}/a b", 3)

    segment = compose_config("segment", python_command("segment", "tune=fast")[2:])
    assert segment.tune == compose_config("segment", ["segment_tune@tune=fast"]).tune


def test_literal_values_survive_hydra_and_omegaconf():
    for value in ["a,b", "${oc.env:HOME}", "\\${x}", "it's", "ends with \\", "\\'", "x=(y)",
                  "two  spaces", "null", "'quoted'", "tab\there"]:
        cfg = compose_config("predict", [f"input={make_args.hydra_literal(value)}"])
        assert cfg.input == value


def test_unbalanced_quote_in_args_is_one_error_line():
    done = subprocess.run([sys.executable, "-m", "gymchurn.make_args", "gymchurn.experiment"],
                          env={**os.environ, make_args.VARS: "", "GYMCHURN_MAKE_args": "a='b"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: args=")
    assert len(done.stderr.strip().splitlines()) == 1


def test_ui_and_serve_pass_host_and_port_as_single_words(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "mlflow"  # records its arguments, one per line
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/args.txt\n"
                      f"echo \"$MLFLOW_SERVER_ENABLE_JOB_EXECUTION\" > {tmp_path}/jobs.txt\n")
    script.chmod(0o755)
    port = f"1; touch {tmp_path / 'pwned'}"
    host = "a'b $(touch x)"
    done = make("ui", f"BIN={fake}", f"PORT={port}", f"HOST={host}")
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[args.index("--port") + 1] == port and args[args.index("--host") + 1] == host
    # the UI starts without MLflow's GenAI job runner (seven idle consumers, about a core)
    assert (tmp_path / "jobs.txt").read_text().strip() == "false"
    done = make("serve", f"BIN={fake}", f"SERVE_PORT={port}")
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[args.index("--port") + 1] == port
    assert not (tmp_path / "pwned").exists()


def test_a_misspelt_option_stops_make_before_anything_runs():
    # Review: `make promote verison=3` promoted the challenger, the typo dropped without a word.
    done = make("-n", "promote", "verison=3", "feature=raw")
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown option(s): verison feature." in done.stderr or \
        "unknown option(s): feature verison." in done.stderr
    assert "version" in done.stderr and "args=" in done.stderr  # what to type instead
    assert make("-n", "promote", "version=3").returncode == 0
