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
from gymchurn.errors import GymchurnError


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
    assert isinstance(compose_config("config", ["tune.timeout=120"]).tune.timeout, float)
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
    # Not Hydra's advice to append it with +: that ran with the key unread (review).
    assert message == "unknown key tune.n_trails: did you mean tune.n_trials?"
    with pytest.raises(ConfigCompositionException) as info:
        compose_config("monitor", ["drift.zzz=1"])
    assert config_error_message(info.value) == (
        "unknown key drift.zzz: drift has psi_watch, psi_drift, alpha, out_of_range_watch.")


def test_adding_a_key_no_code_reads_is_refused_and_free_form_sections_still_take_one():
    from gymchurn.options import check_options

    added = "+tune.n_trail=5"
    with pytest.raises(GymchurnError) as info:
        check_options(composed("config", [added]), "config", [added])
    assert str(info.value).startswith("unknown key tune.n_trail: did you mean tune.n_trials?")
    free = "+model.search_space.penalty={type:categorical,choices:[l2]}"  # estimator arguments
    check_options(composed("config", ["model=logreg", free]), "config", ["model=logreg", free])


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


# ---------------------------------------------------------------- values the types let through
# (gymchurn.options, run by hydra_main before the task)


def typed_fields(schema, prefix=""):
    """(dotted key, type, field) of every typed leaf of a schema."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from typed_fields(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", kind, f


def numeric(kind) -> bool:
    import typing

    return kind in (int, float) or any(a in (int, float) for a in typing.get_args(kind))


BOOLEANS = [(name, key) for name, schema in SCHEMAS.items()
            for key, kind, _ in typed_fields(schema) if kind is bool]


def composed(name: str, overrides: list[str]):
    return compose_config(name, [*(["input=new.csv"] if name == "predict" else []), *overrides])


def test_every_boolean_option_of_the_five_configs_is_found():
    assert {("promote", "force"), ("config", "registry.register"), ("segment", "tracking.log_trials"),
            ("predict", "segmentation.enabled"), ("report", "tracking.log_trials")} <= set(BOOLEANS)


@pytest.mark.parametrize(("name", "key"), BOOLEANS, ids=[f"{n}:{k}" for n, k in BOOLEANS])
def test_a_boolean_option_accepts_only_true_or_false(name, key):
    from gymchurn.options import check_options

    cfg = composed(name, [f"{key}=no"])
    assert OmegaConf.select(cfg, key) is False  # OmegaConf alone takes it: `force=no` is False
    for value in ("no", "yes", "on", "off", "y", "0", "1", "2"):
        with pytest.raises(GymchurnError) as info:
            check_options(cfg, name, [f"{key}={value}"])
        shown = repr(int(value)) if value.isdigit() else repr(value)
        assert str(info.value) == f"{key} must be true or false, got {shown}"
    for value in ("true", "false", "True", "FALSE", "'true'"):
        check_options(cfg, name, [f"{key}={value}"])


def test_every_number_option_has_bounds():
    # A new number option must say what range it allows (gymchurn.config.number).
    unbounded = [f"{name}:{key}" for name, schema in SCHEMAS.items()
                 for key, kind, f in typed_fields(schema)
                 if numeric(kind) and "bounds" not in f.metadata]
    assert unbounded == []


OUT_OF_RANGE = [
    ("config", "split.test_size=1.5", "split.test_size must be strictly between 0 and 1, got 1.5"),
    ("config", "split.test_size=0", "split.test_size must be strictly between 0 and 1, got 0.0"),
    ("config", "tune.n_trials=0", "tune.n_trials must be at least 1, got 0"),
    ("config", "tune.folds=1", "tune.folds must be at least 2, got 1"),
    ("config", "tune.timeout=nan", "tune.timeout must be a finite number, got nan"),
    ("config", "tune.timeout=inf", "tune.timeout must be a finite number, got inf"),
    ("config", "tune.timeout=-5", "tune.timeout must be above 0, got -5.0"),
    ("config", "seed=-1", "seed must be between 0 and 4294967295, got -1"),  # not tune.seed
    ("config", "workers=0", "workers must be at least 1, got 0"),
    ("config", "n_jobs=0", "n_jobs must be at least 1, got 0"),
    ("config", "threshold.cost_ratio=0", "threshold.cost_ratio must be above 0, got 0.0"),
    ("config", "evaluation.repeated_cv_repeats=-1",
     "evaluation.repeated_cv_repeats must be at least 0, got -1"),
    ("segment", "tune.bootstraps=1", "tune.bootstraps must be at least 2, got 1"),
    ("segment", "segmentation.constraints.min_segment_share=1.5",
     "segmentation.constraints.min_segment_share must be between 0 and 1, got 1.5"),
    ("segment", "segmentation.selection.require={rule_fidelity_min: nan}",
     "segmentation.selection.require.rule_fidelity_min must be a finite number, got nan"),
    ("predict", "version=0", "version must be at least 1, got 0"),
    ("predict", "reason_batch_rows=0", "reason_batch_rows must be at least 1, got 0"),
    ("promote", "version=-2", "version must be at least 1, got -2"),
    ("promote", "holdout.test_size=1", "holdout.test_size must be strictly between 0 and 1, got 1.0"),
    ("promote", "lock.wait_seconds=-1", "lock.wait_seconds must be at least 0, got -1.0"),
    ("report", "min_drop=2", "min_drop must be between 0 and 1, got 2.0"),
    ("report", "strong_correlation=-0.5", "strong_correlation must be between 0 and 1, got -0.5"),
]


@pytest.mark.parametrize(("name", "override", "message"), OUT_OF_RANGE)
def test_a_number_outside_its_range_is_refused_naming_the_key(name, override, message):
    from gymchurn.options import check_options

    cfg = composed(name, [override])  # the type alone lets it through
    with pytest.raises(GymchurnError) as info:
        check_options(cfg, name, [override])
    assert str(info.value) == message


def test_every_config_as_shipped_passes_the_checks():
    from gymchurn.options import check_options

    for name, overrides in VALID:
        check_options(composed(name, overrides), name, overrides)


def test_more_workers_than_cpus_are_refused_before_any_work(run_main, capsys):
    from gymchurn.options import usable_cpus

    cpus = usable_cpus()
    with pytest.raises(SystemExit) as info:
        run_main(f"workers={cpus + 1}")
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: workers={cpus + 1} is more than the {cpus} CPU(s) this command may use: each "
        "worker is a process running trials, and more than one per CPU only wait for a turn. "
        f"Use workers={cpus} or fewer.\n")
    assert run_main(f"workers={cpus}")["cfg"].workers == cpus  # the task ran


def test_the_promote_command_refuses_force_no_before_touching_the_store(tmp_path):
    # The issue: `force=no` forced a promotion the gate had rejected.
    done = subprocess.run(
        [sys.executable, "-m", "gymchurn.promote", "version=1", "force=no",
         f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: force must be true or false, got 'no'\n"
    assert not any(tmp_path.iterdir())
