"""The typed config schema (gymchurn.config): every YAML validates, a bad command-line value fails
at composition with one line naming the key and the type, before any work."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from gymchurn.config import (
    CONFIG_DIR,
    PROJECT_ROOT,
    SCHEMAS,
    compose_config,
    config_error_message,
    hydra_main,
)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# Every primary config, and every option of its groups, composes against its schema.
VALID = [(name, []) for name in SCHEMAS] + [
    *[("config", [f"model={m}"]) for m in options("model")],
    *[("config", [f"features={f}"]) for f in options("features")],
    *[("config", [f"tune={t}"]) for t in options("tune")],
    *[("config", [f"experiment={e}"]) for e in options("experiment")],
    *[("segment", [f"clustering={c}"]) for c in options("clustering")],
    *[("segment", [f"segment_tune@tune={t}"]) for t in options("segment_tune")],
]


@pytest.mark.parametrize(("name", "overrides"), VALID, ids=[" ".join([n, *o]) for n, o in VALID])
def test_every_config_composes_against_its_schema(name, overrides):
    cfg = compose_config(name, overrides)
    assert OmegaConf.get_type(cfg) is SCHEMAS[name]  # the schema is first in the defaults list


def test_values_are_typed_and_interpolations_still_resolve():
    cfg = compose_config("config", ["seed=7", "tune.timeout=null", "n_jobs=2"])
    assert cfg.seed == 7 and cfg.tune.seed == 7 and cfg.split.seed == 7  # ${seed}
    assert cfg.model.estimator.random_state == 7 and cfg.model.estimator.n_jobs == 2
    assert cfg.tune.timeout is None
    assert isinstance(compose_config().tune.timeout, float)  # `timeout: 120` in the YAML
    assert cfg.tune.storage == f"sqlite:///{PROJECT_ROOT.as_posix()}/mlruns/optuna.db"  # ${root:}
    assert cfg.tracking.uri == os.environ["MLFLOW_TRACKING_URI"]  # ${oc.env:...}
    predict = compose_config("predict", ["input=new.csv", "version=3"])
    assert predict.version == 3 and predict.output is None
    assert OmegaConf.is_missing(compose_config("predict"), "input")  # still required, as before


BAD = [
    ("config", "tune.n_trials=abc", "tune.n_trials must be int, got 'abc'"),
    ("config", "seed=abc", "seed must be int, got 'abc'"),
    ("config", "workers=1.5", "workers must be int, got 1.5"),
    ("config", "tracking.log_trials=maybe", "tracking.log_trials must be bool, got 'maybe'"),
    ("config", "tune.timeout=soon", "tune.timeout must be float or null, got 'soon'"),
    ("config", "seed=null", "seed must be int, got null"),
    ("segment", "tune.bootstraps=x", "tune.bootstraps must be int, got 'x'"),
    ("predict", "version=latest", "version must be int or null, got 'latest'"),
    ("promote", "force=maybe", "force must be bool, got 'maybe'"),
    ("report", "top_drivers=many", "top_drivers must be int, got 'many'"),
]


@pytest.mark.parametrize(("name", "override", "message"), BAD)
def test_a_bad_value_fails_at_composition_naming_key_and_type(name, override, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(name, [override])
    assert override.split("=")[0] in str(info.value)  # Hydra's own text names it too
    assert config_error_message(info.value) == message


def test_an_unknown_key_is_one_line_naming_it():
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("config", ["tune.n_trails=5"])
    message = config_error_message(info.value)
    assert "\n" not in message and "tune.n_trails" in message and "+tune.n_trails=5" in message


# ---------------------------------------------------------------- hydra_main, in this process


@pytest.fixture
def run_main(monkeypatch, tmp_path):
    """Run a hydra_main("config") task with these command-line overrides; return what it saw."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    seen = {}

    def run(*overrides, task=None):
        def record(cfg):
            seen.update(cfg=cfg, full_error=os.environ.get("HYDRA_FULL_ERROR"))
            return task(cfg) if task else None

        monkeypatch.setattr(sys, "argv", ["experiment", *overrides, f"hydra.run.dir={tmp_path}/hydra",
                                          "hydra.output_subdir=null", "hydra/job_logging=none",
                                          "hydra/hydra_logging=none"])
        hydra_main("config")(record)()
        return seen

    return run


def test_hydra_main_reports_a_bad_value_in_one_line_with_exit_code_2(run_main, capsys):
    with pytest.raises(SystemExit) as info:
        run_main("tune.n_trials=abc")
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: tune.n_trials must be int, got 'abc'\n"
    assert "HYDRA_FULL_ERROR" not in os.environ


def test_hydra_main_runs_the_task_with_the_typed_config(run_main):
    seen = run_main("tune.n_trials=3")
    assert seen["cfg"].tune.n_trials == 3
    assert seen["full_error"] is None  # the task's own failures get Hydra's usual report
    assert "HYDRA_FULL_ERROR" not in os.environ


def test_hydra_main_leaves_task_failures_to_hydra(run_main, capsys):
    def fail(cfg):
        raise RuntimeError("a bug in the work itself")

    with pytest.raises(SystemExit) as info:
        run_main(task=fail)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "RuntimeError: a bug in the work itself" in err and "HYDRA_FULL_ERROR=1" in err


# ---------------------------------------------------------------- the real entrypoint


def run_experiment(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, "-m", "gymchurn.experiment", *overrides, f"hydra.run.dir={tmp_path}/hydra",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tune.storage=sqlite:///{tmp_path}/optuna.db"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )


def test_experiment_with_a_bad_value_fails_before_any_work(tmp_path):
    result = run_experiment(tmp_path, "tune.n_trials=abc")
    assert result.returncode != 0
    assert "tune.n_trials" in result.stderr and re.search(r"\bint", result.stderr, re.IGNORECASE)
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())  # no run directory, MLflow store or study


def test_experiment_with_a_bad_value_says_so_in_one_line(tmp_path):
    result = run_experiment(tmp_path, "tune.n_trials=abc")
    assert result.returncode == 2
    assert result.stderr == "error: tune.n_trials must be int, got 'abc'\n"
