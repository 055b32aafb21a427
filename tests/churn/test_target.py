"""Training data with one class, or too few of one: a clear error before the split, not a
scikit-learn traceback or a study whose every trial failed (gymchurn.churn.target)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gymchurn.churn.target import check_classes
from gymchurn.errors import GymchurnError


def test_one_class_is_refused_naming_it(customers):
    with pytest.raises(GymchurnError) as info:
        check_classes(customers["Churn"] * 0, test_size=0.2, folds=5)
    assert str(info.value).startswith(
        f"the training data has only Churn=0 (all {len(customers)} customers): a churn model "
        "needs customers who left and customers who stayed. Check data.path")


def test_too_few_of_one_class_for_the_split_and_folds_is_refused(customers):
    y = customers["Churn"].copy()
    y[:] = 0
    y.iloc[:7] = 1  # 7 churners: a 20 % holdout and 5-fold CV need 8 of each class
    with pytest.raises(GymchurnError, match=r"only 7 customer\(s\) with Churn=1: a stratified "
                                            r"holdout of 0.2 and 5-fold cross-validation needs at "
                                            r"least 8 of each class\. Use a larger table, or "
                                            r"change tune.folds or split.test_size\."):
        check_classes(y, test_size=0.2, folds=5)
    y.iloc[:8] = 1
    check_classes(y, test_size=0.2, folds=5)
    check_classes(customers["Churn"], test_size=0.2, folds=5)  # the usual table passes


@pytest.mark.slow
def test_an_experiment_on_one_class_data_stops_before_any_work(customers, tmp_path):
    customers.assign(Churn=0).to_csv(tmp_path / "stayers.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "gymchurn.experiment", f"data.path={tmp_path / 'stayers.csv'}",
         "data.shared_path=null", "data.url=null", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
         f"tune.storage=sqlite:///{tmp_path}/optuna.db", f"hydra.run.dir={tmp_path}/hydra"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: the training data has only Churn=0 (all 600 customers)")
    assert "Traceback" not in done.stderr and "search space" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()
