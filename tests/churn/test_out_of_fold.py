"""Out-of-fold scores: each row scored by a model that never saw it, reproducibly, with reasons
only for the rows asked; clear errors when the target cannot be split into folds."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from gymchurn.churn.out_of_fold import out_of_fold
from gymchurn.churn.reasons import contribution_method, contributions, model_input, reason_words
from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.errors import GymchurnError
from gymchurn.pipeline import build_pipeline

CFG = compose_config(overrides=["n_jobs=1"])
COLUMNS = feature_columns(CFG.data)
LABELS = OmegaConf.to_container(CFG.data.labels)
NEGATIVE = OmegaConf.to_container(CFG.data.negative_labels)


def pipeline(model: str):
    cfg = compose_config(overrides=[f"model={model}", "features=engineered", "n_jobs=1"])
    params = {"n_estimators": 30, "n_jobs": 1} if model == "lgbm" else {}
    return build_pipeline(cfg.features, cfg.model, COLUMNS, params)


@pytest.fixture(scope="module")
def table():
    return make_synthetic_customers(300, seed=5)


@pytest.mark.parametrize("model", ["lgbm", "logreg"])
def test_each_row_is_scored_by_a_model_fitted_without_its_fold(table, model):
    X, y = table[COLUMNS], table["Churn"]
    asked = np.zeros(len(X), dtype=bool)
    asked[::4] = True
    oof = out_of_fold(pipeline(model), X, y, 3, seed=11, reason_rows=asked, labels=LABELS,
                      n_jobs=1, negative_labels=NEGATIVE)
    assert oof.proba.shape == (len(X),) and np.isfinite(oof.proba).all()
    assert sorted(np.unique(oof.fold)) == [0, 1, 2]

    # Refit one fold by hand: the folds are StratifiedKFold's with the seed, and its rows'
    # probabilities and reasons are those of a model fitted on the other two folds only.
    train, held = list(StratifiedKFold(3, shuffle=True, random_state=11).split(X, y))[1]
    assert (oof.fold[held] == 1).all() and (oof.fold[train] != 1).all()
    by_hand = clone(pipeline(model)).fit(X.iloc[train], y.iloc[train])
    np.testing.assert_allclose(oof.proba[held], by_hand.predict_proba(X.iloc[held])[:, 1],
                               rtol=1e-10)
    whole = clone(pipeline(model)).fit(X, y)  # a model that saw them scores them otherwise
    assert not np.allclose(oof.proba[held], whole.predict_proba(X.iloc[held])[:, 1])

    explained = held[asked[held]]
    features = model_input(by_hand, X.iloc[explained])
    effects = contributions(contribution_method(by_hand[-1])[1], features, n_jobs=1)
    # The values shown are the customer's own: for logreg, before its StandardScaler.
    shown = by_hand[:-2].transform(X.iloc[explained]) if model == "logreg" else features
    expected = reason_words(effects, shown, LABELS, negative_labels=NEGATIVE)
    for got, want in zip(oof.reasons, expected, strict=True):
        assert got[explained].tolist() == want.tolist()
    # The negative labels reach the words: a negative visit_drop reads as visits that rose.
    worded = [r for column in oof.reasons for r in column if r]
    assert not any(r.startswith(f"{LABELS['visit_drop']} = -") for r in worded)
    if model == "lgbm":  # this model names risen visits among its reasons
        assert any(r.startswith(f"{NEGATIVE['visit_drop']} = ") for r in worded)


def test_same_seed_same_scores_reasons_only_for_the_rows_asked(table):
    X, y = table[COLUMNS], table["Churn"]
    asked = (table["Lifetime"] <= 2).to_numpy()
    first = out_of_fold(pipeline("lgbm"), X, y, 4, seed=3, reason_rows=asked, n_jobs=1)
    again = out_of_fold(pipeline("lgbm"), X, y, 4, seed=3, reason_rows=asked, n_jobs=1)
    np.testing.assert_array_equal(first.proba, again.proba)
    np.testing.assert_array_equal(first.fold, again.fold)
    assert [r.tolist() for r in first.reasons] == [r.tolist() for r in again.reasons]
    other = out_of_fold(pipeline("lgbm"), X, y, 4, seed=4, n_jobs=1)
    assert not np.array_equal(first.fold, other.fold)

    assert len(first.reasons) == 3
    assert all(r[~asked].tolist() == [None] * (~asked).sum() for r in first.reasons)
    assert np.array([r is not None for r in first.reasons[0][asked]]).mean() > 0.9
    # Without labels a reason names the feature itself; with none asked, no reasons at all.
    assert any(r.startswith(("Lifetime = ", "Contract_period = ", "visit_trend = "))
               for r in first.reasons[0][asked] if r)
    assert all(r is None for column in other.reasons for r in column)


def test_folds_never_leave_a_class_out_of_a_model(table):
    X, y = table[COLUMNS], table["Churn"]
    with pytest.raises(GymchurnError, match="only Churn=0.*who left and customers who stayed"):
        out_of_fold(pipeline("logreg"), X, y * 0, 3, seed=1)
    few = y.copy()
    few[:] = 0
    few.iloc[:2] = 1
    with pytest.raises(GymchurnError, match=r"only 2 customer\(s\) with Churn=1: 3-fold .* at "
                                            r"least 3 of each class.*fewer folds"):
        out_of_fold(pipeline("logreg"), X, few, 3, seed=1)
    with pytest.raises(GymchurnError, match="at least 2 folds"):
        out_of_fold(pipeline("logreg"), X, y, 1, seed=1)


def test_ctrl_c_stops_between_folds(table, monkeypatch):
    from gymchurn.churn import out_of_fold as module

    calls = []

    def stop_at_the_third_fold():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("signal 2")

    monkeypatch.setattr(module, "interruption_point", stop_at_the_third_fold)
    with pytest.raises(KeyboardInterrupt):
        out_of_fold(pipeline("logreg"), table[COLUMNS], table["Churn"], 5, seed=1)
    assert len(calls) == 3
