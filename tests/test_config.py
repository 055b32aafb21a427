"""Config groups: every model family and feature set composes, builds, fits and can be tuned."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import optuna
import pytest
from hydra.errors import ConfigCompositionException

from gymchurn.config import CONFIG_DIR, compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.pipeline import build_pipeline
from gymchurn.tuning import suggest_params

MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
FEATURES = sorted(p.stem for p in (CONFIG_DIR / "features").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def small_table():
    return make_synthetic_customers(300, seed=11)


@functools.cache
def compose(*overrides: str):
    # One thread per fit: the machine has 2 cores and tests may run beside other work.
    # Cached: composing takes a moment, and no test changes the config it gets.
    return compose_config(overrides=[*overrides, "n_jobs=1"])


def fit_and_score(cfg, table, params=None):
    columns = feature_columns(cfg.data)
    pipe = build_pipeline(cfg.features, cfg.model, columns, params)
    pipe.fit(table[columns], table[cfg.data.target])
    return pipe, pipe.predict_proba(table[columns])


def test_the_config_groups_are_found():
    assert {"lgbm", "logreg", "rf", "xgb"} <= set(MODELS)
    assert {"raw", "engineered"} <= set(FEATURES)


@pytest.mark.parametrize(("model", "features"), list(itertools.product(MODELS, FEATURES)))
def test_every_model_and_feature_set_fits_and_predicts(model, features, small_table):
    cfg = compose(f"model={model}", f"features={features}")
    assert cfg.model.name == model
    assert cfg.features.name == features
    pipe, proba = fit_and_score(cfg, small_table)
    assert proba.shape == (len(small_table), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba[:, 1].std() > 0  # not a constant predictor
    # The model sees the customer columns (plus engineered ones), never the target.
    seen = set(pipe[-1].feature_names_in_)
    assert set(feature_columns(cfg.data)) <= seen and cfg.data.target not in seen


def corner_values(space: dict, i: int) -> dict:
    """The i-th corner of a search space: low or high bounds, and the i-th choice."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "categorical":
            values[name] = list(spec["choices"])[i % len(spec["choices"])]
        else:
            values[name] = spec["low"] if i % 2 == 0 else spec["high"]
    return values


def assert_estimator_took(pipe, params: dict):
    estimator_params = pipe[-1].get_params()
    for name, value in params.items():
        assert estimator_params[name] == value, name


@pytest.mark.parametrize("model", MODELS)
def test_search_space_corners_are_accepted_by_the_estimator(model, small_table):
    cfg = compose(f"model={model}", "features=raw")
    space = dict(cfg.model.search_space)
    assert space, f"{model} has an empty search space"
    n_corners = max([2] + [len(s["choices"]) for s in space.values() if s["type"] == "categorical"])
    for i in range(n_corners):
        wanted = corner_values(space, i)
        params = suggest_params(optuna.trial.FixedTrial(wanted), space)
        assert params == wanted
        pipe, proba = fit_and_score(cfg, small_table.iloc[:120], params)
        assert_estimator_took(pipe, params)
        assert np.all((proba >= 0) & (proba <= 1))


@pytest.mark.parametrize("model", MODELS)
def test_study_trials_sample_inside_the_space(model, small_table):
    cfg = compose(f"model={model}", "features=engineered")
    space = dict(cfg.model.search_space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    params = suggest_params(trial, space)
    assert set(params) == set(space)
    for name, spec in space.items():
        if spec["type"] == "categorical":
            assert params[name] in list(spec["choices"])
        else:
            assert spec["low"] <= params[name] <= spec["high"], name
            if spec["type"] == "int":
                assert isinstance(params[name], int)
                assert (params[name] - spec["low"]) % spec.get("step", 1) == 0
    pipe, proba = fit_and_score(cfg, small_table.iloc[:200], params)
    assert_estimator_took(pipe, params)
    study.tell(trial, float(proba[:, 1].mean()))
    assert study.trials[0].params == params


def test_unknown_search_space_type_is_a_user_error():
    space = {"C": {"type": "bool", "low": 0, "high": 1}}
    with pytest.raises(GymchurnError, match="'C' has type 'bool'.*int, float or categorical"):
        suggest_params(optuna.trial.FixedTrial({"C": 1}), space)


def test_bad_estimator_argument_is_a_user_error():
    cfg = compose("model=logreg")
    with pytest.raises(GymchurnError, match="could not build estimator .*LogisticRegression"):
        build_pipeline(cfg.features, cfg.model, feature_columns(cfg.data), {"no_such_arg": 1})


def test_bad_estimator_argument_error_names_the_argument():
    cfg = compose("model=logreg")
    with pytest.raises(GymchurnError, match="no_such_arg"):
        build_pipeline(cfg.features, cfg.model, feature_columns(cfg.data), {"no_such_arg": 1})


def test_unknown_model_names_the_available_options():
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(overrides=["model=nope"])
    message = str(info.value)
    assert "model/nope" in message
    for name in MODELS:
        assert f"\t{name}\n" in message


def test_fast_tuning_is_smaller_than_default():
    fast, default = compose("tune=fast").tune, compose().tune
    assert fast.n_trials < default.n_trials
    assert fast.folds <= default.folds
    assert fast.metric == default.metric  # only the budget changes


def hydra_settings(*overrides: str) -> dict:
    """The parts of Hydra's own config a preset may set: a sweep (compare is a multirun over
    model x features), callbacks, launcher and output folders. Not the record of the overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from gymchurn.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    return {key: OmegaConf.to_container(cfg.hydra[key], resolve=False)
            for key in ("sweeper", "callbacks", "launcher", "run", "sweep")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_presets_compose(experiment):
    cfg = compose(f"experiment={experiment}")
    plain = compose()
    # A preset changes something: the job's config, or (compare) only how Hydra runs the command.
    assert cfg != plain or hydra_settings(f"experiment={experiment}") != hydra_settings()
    assert cfg.model.name in MODELS and cfg.features.name in FEATURES


def test_compare_preset_sweeps_every_family_and_feature_set():
    compare = hydra_settings("experiment=compare")
    assert compare["sweeper"]["params"] == {"model": "glob(*)", "features": "glob(*)"}
    assert compare["callbacks"]["leaderboard"]["_target_"] == (
        "gymchurn.churn.leaderboard.LeaderboardWriter")
    assert hydra_settings()["callbacks"] == {}  # a single experiment writes no leaderboard
