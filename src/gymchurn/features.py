"""Feature stage: sklearn transformers that live inside the model pipeline.

Because features are computed inside the pipeline, the registered model takes the raw customer
columns. Transformers are importable classes (never lambdas) so skops can save them safely.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class BehaviourChangeFeatures(TransformerMixin, BaseEstimator):
    """Add features that describe how a customer's behaviour is changing.

    - `visit_trend`: this month's visits per week over the lifetime average (1 = as usual,
      below 1 = visiting less). Customers with no lifetime visits get 1.
    - `visit_drop`: lifetime average minus this month's frequency (visits per week lost).
    - `months_served`: months already served of the current contract.
    - `contract_progress`: share of the contract already served (0 = just signed).
    - `spend_per_month`: additional spend per month of membership.
    """

    new_columns = [
        "visit_trend",
        "visit_drop",
        "months_served",
        "contract_progress",
        "spend_per_month",
    ]
    # Each one in words, for the report (defined where it is first named).
    definitions = {
        "visit_trend": "this month's visits per week over the lifetime average; 1 = as usual",
        "visit_drop": "the lifetime average of visits per week minus this month's",
        "months_served": "the months of the current contract already served",
        "contract_progress": "the share of the current contract already served; 0 = just signed",
        "spend_per_month": "spend on extras over months as a member plus one",
    }

    def fit(self, X: pd.DataFrame, y=None):
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        total = X["Avg_class_frequency_total"].to_numpy(dtype=float)
        current = X["Avg_class_frequency_current_month"].to_numpy(dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["visit_trend"] = np.where(total > 0, current / total, 1.0)
        out["visit_drop"] = total - current
        served = X["Contract_period"] - X["Month_to_end_contract"]
        out["months_served"] = served
        out["contract_progress"] = served / X["Contract_period"]
        out["spend_per_month"] = X["Avg_additional_charges_total"] / (X["Lifetime"] + 1)
        return out

    def get_feature_names_out(self, input_features=None):
        names = list(self.feature_names_in_ if input_features is None else input_features)
        return np.asarray(names + self.new_columns, dtype=object)
