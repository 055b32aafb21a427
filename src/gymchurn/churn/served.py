"""The served churn model, in MLflow's "models from code" form (this file is logged as code).

It wraps the fitted sklearn pipeline (saved with skops, which never executes code on load)
and returns one column: the probability that each customer churns next month. Its input is
checked with the data rules the model was trained under (its settings' "data_schema"), as
`make predict` checks a file: a broken rule is an HTTP 400 naming the column and the rule.

A registered version runs the copy of this file logged with it, so versions logged before
keep their own code; what that code imports from gymchurn must stay importable.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from gymchurn.churn import PROBABILITY_COLUMN
from gymchurn.registry import load_pipeline, model_settings
from gymchurn.serving import checked_input


class ChurnProbabilityModel(PythonModel):
    def load_context(self, context):
        settings = model_settings(context)
        self.settings = settings  # monitoring reads its "reference" (gymchurn.monitoring)
        self.pipeline = load_pipeline(context.artifacts["pipeline"], settings["skops_trusted_types"])
        self.threshold = float(settings["threshold"])
        self.data_schema = settings.get("data_schema")  # None: logged without rules

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        model_input = checked_input(model_input, self.data_schema)
        proba = self.pipeline.predict_proba(model_input)[:, 1]
        return pd.DataFrame({PROBABILITY_COLUMN: proba}, index=model_input.index)


mlflow.models.set_model(ChurnProbabilityModel())
