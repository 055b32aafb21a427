"""The churn road: tune, evaluate and register a classifier; score customers; explain scores."""

PROBABILITY_COLUMN = "churn_probability"  # the registered model's one output column
REASON_CHOICES = ("flagged", "all", "none")  # which scored customers get their top reasons
REASON_METHODS = ("compiled", "native")  # LightGBM contributions: compiled TreeSHAP | pred_contrib
