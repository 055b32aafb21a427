"""What the served models share (churn/served.py, segments/served.py, run by `mlflow models serve`):
their input is checked with the data rules the model was trained under, as `make predict` checks
a file, and a broken rule is a client error (HTTP 400) naming the column and the rule.

The server has no Hydra config, so the rules travel with the model: its settings' "data_schema"
(written by gymchurn.registry.log_pipeline_model from the training run's config).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from gymchurn.errors import GymchurnError

# The rule keys of conf/data/gym.yaml the quick check understands. A rule with any other key
# sends every request to the full validation.
QUICK_RULE_KEYS = {"kind", "values", "min", "max", "at_most"}


def data_schema(data_cfg: Mapping) -> dict:
    """A data config's column rules and target as plain values, for a model's config."""
    from omegaconf import DictConfig, OmegaConf

    columns = data_cfg["columns"]
    if isinstance(columns, DictConfig):
        columns = OmegaConf.to_container(columns, resolve=True)
    # The model's config is YAML with sorted keys: `order` keeps the rules' order for messages.
    return {"target": str(data_cfg["target"]), "order": [str(name) for name in columns],
            "columns": {str(name): dict(rule) for name, rule in columns.items()}}


def schema_typed(X: pd.DataFrame, data_cfg: Mapping,
                 stored: Mapping[str, str] | None = None) -> pd.DataFrame:
    """`X` with each column in the type the schema declares (kind int -> int64, float ->
    float64), unless the training file stores an int column with decimals (`stored`, from
    load_customers: the real table writes months left as 5.0): the model's input example is
    then a table in the training file's format. (The signature declares no types:
    gymchurn.registry.checked_by_the_model.)"""
    rules = data_schema(data_cfg)["columns"]
    stored = stored or {}
    kinds = {"int": "int64", "float": "float64"}
    return X.astype({c: kinds[stored.get(c, rules[c]["kind"])] for c in X.columns
                     if c in rules and rules[c].get("kind") in kinds})


def quick_check(df: pd.DataFrame, columns: Mapping) -> pd.DataFrame | None:
    """The schema's columns, typed as validate_customers types them, when every value plainly
    meets its rule; else None.

    Vectorised (about a millisecond for a request; pandera takes some 80 ms whatever the size),
    and at least as strict as the full validation: None whenever any rule might fail, or is of
    a kind this check does not know. So a request passes here only if validate_customers would
    pass it, and everything else is decided, and worded, by validate_customers.
    """
    if len(df) == 0:
        return None
    typed = {}
    for name, rule in columns.items():
        if name not in df.columns or set(rule) - QUICK_RULE_KEYS or rule.get("kind") not in (
                "int", "float"):
            return None
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype="float64")
        ok = np.isfinite(values)
        if rule.get("values") is not None:
            ok &= np.isin(values, np.asarray(rule["values"], dtype="float64"))
        if rule.get("min") is not None:
            ok &= values >= float(rule["min"])
        if rule.get("max") is not None:
            ok &= values <= float(rule["max"])
        if rule["kind"] == "int":
            ok &= values == np.floor(values)
        if not ok.all():
            return None
        typed[name] = values.astype("int64" if rule["kind"] == "int" else "float64")
    for name, rule in columns.items():
        high = rule.get("at_most")
        if high is not None and high in typed and not (typed[name] <= typed[high]).all():
            return None
    return pd.DataFrame(typed, index=df.index)


def checked_input(model_input: pd.DataFrame, rules: Mapping | None) -> pd.DataFrame:
    """A served model's input checked with the training data rules: the schema's feature
    columns, typed. A broken rule raises MlflowException(INVALID_PARAMETER_VALUE), which
    `mlflow models serve` answers with HTTP 400 and the message of gymchurn.data.validate_customers.
    A model logged without rules gets its input unchanged."""
    if not rules:
        return model_input
    target = rules["target"]
    order = rules.get("order") or list(rules["columns"])
    every = {name: rules["columns"][name] for name in order}
    # The target may be absent, as in `make predict`; it is never a model input.
    columns = {name: rule for name, rule in every.items() if name != target or name in model_input}
    checked = quick_check(model_input, columns)
    if checked is None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from gymchurn.data import validate_customers

        try:
            checked, _ = validate_customers(model_input, every, target, require_target=False)
        except GymchurnError as err:
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
    # In the request's order: the signature's, so the order the pipeline was trained on.
    return checked[[c for c in model_input.columns if c in checked.columns and c != target]]
