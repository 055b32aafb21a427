"""Model stage: build the whole sklearn pipeline (columns -> features -> estimator) from config.

A model family is one YAML in conf/model/ (estimator `_target_`, optional preprocessing steps,
search space), so a new family needs no Python as long as its estimator is importable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from gymchurn.errors import GymchurnError


def _instantiate(node, what: str, **overrides):
    try:
        return instantiate(node, **overrides)
    except Exception as err:  # Hydra wraps import/argument errors in several exception types
        target = node.get("_target_", "?") if isinstance(node, Mapping) else node
        cause = err.__cause__ or err  # Hydra's own message is only "Error in call to target"
        said = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())
        raise GymchurnError(
            f"could not build {what} '{target}': {said} "
            "Check the _target_ and its arguments in the config."
        ) from err


def build_pipeline(
    features_cfg: Mapping,
    model_cfg: Mapping,
    columns: Sequence[str],
    params: Mapping | None = None,
) -> Pipeline:
    """Pipeline taking the raw customer columns and predicting churn.

    `params` overrides estimator arguments (a trial's or the best hyperparameters).
    """
    select = ColumnTransformer(
        [("customer_columns", "passthrough", list(columns))],
        remainder="drop",  # ids and other extra columns never reach the model
        verbose_feature_names_out=False,
    )
    steps = [("select", select)]
    for i, node in enumerate(features_cfg.get("steps") or []):
        steps.append((f"features_{i}", _instantiate(node, "feature step")))
    for i, node in enumerate(model_cfg.get("preprocessing") or []):
        steps.append((f"preprocess_{i}", _instantiate(node, "preprocessing step")))
    params = OmegaConf.to_container(params) if OmegaConf.is_config(params) else dict(params or {})
    steps.append(("model", _instantiate(model_cfg["estimator"], "estimator", **params)))
    # DataFrames all the way through, so tree models and SHAP see real feature names.
    return Pipeline(steps).set_output(transform="pandas")
