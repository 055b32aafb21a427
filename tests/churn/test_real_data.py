"""On the real table (../shared/data), when it is there: the quick budget already predicts well."""

from __future__ import annotations

import pytest

from gymchurn import experiment
from gymchurn.config import compose_config
from tests.conftest import REAL_DATA


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real data not found at {REAL_DATA}")
def test_fast_tuning_on_real_data_reaches_roc_auc_097(tmp_path):
    cfg = compose_config(overrides=[
        f"data.path={REAL_DATA}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tune.storage=sqlite:///{tmp_path}/optuna.db", "tune=fast",
        "evaluation.repeated_cv_repeats=0", "evaluation.permutation_repeats=1",
    ])
    result = experiment.run(cfg)
    assert result["test_metrics"]["roc_auc"] >= 0.97
    assert result["result"].n_test == 800
