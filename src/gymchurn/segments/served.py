"""The served segmentation model, in MLflow's "models from code" form (this file is logged as code).

It wraps the fitted segmentation pipeline (saved with skops, which never executes code on load)
and returns two columns per customer: the segment id and the segment's generated name. Its input
is checked with the data rules the model was trained under, as the churn model's is (see
gymchurn/churn/served.py).
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from gymchurn.registry import load_pipeline, model_settings
from gymchurn.segments.model import NAME_COLUMN, SEGMENT_COLUMN
from gymchurn.serving import checked_input


class CustomerSegmentModel(PythonModel):
    def load_context(self, context):
        settings = model_settings(context)
        self.settings = settings  # monitoring reads its "reference" (gymchurn.monitoring)
        self.pipeline = load_pipeline(context.artifacts["pipeline"], settings["skops_trusted_types"])
        # JSON keys are strings; segment ids are ints.
        self.names = {int(k): v for k, v in settings["segment_names"].items()}
        self.data_schema = settings.get("data_schema")  # None: logged without rules

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        model_input = checked_input(model_input, self.data_schema)
        segments = self.pipeline.predict(model_input).astype("int64")
        return pd.DataFrame(
            {SEGMENT_COLUMN: segments, NAME_COLUMN: [self.names[s] for s in segments]},
            index=model_input.index,
        )


mlflow.models.set_model(CustomerSegmentModel())
