"""The served churn model, in MLflow's "models from code" form (this file is logged as code).

It wraps the fitted sklearn pipeline (saved with skops, which never executes code on load)
and returns one column: the probability that each customer churns next month.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from gymchurn.churn import PROBABILITY_COLUMN
from gymchurn.registry import load_pipeline


class ChurnProbabilityModel(PythonModel):
    def load_context(self, context):
        self.pipeline = load_pipeline(
            context.artifacts["pipeline"], context.model_config["skops_trusted_types"]
        )
        self.threshold = float(context.model_config["threshold"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        proba = self.pipeline.predict_proba(model_input)[:, 1]
        return pd.DataFrame({PROBABILITY_COLUMN: proba}, index=model_input.index)


mlflow.models.set_model(ChurnProbabilityModel())
