"""The churn road: tune, evaluate and register a classifier; score customers; explain scores."""

PROBABILITY_COLUMN = "churn_probability"  # the registered model's one output column
REASON_CHOICES = ("flagged", "all", "none")  # which scored customers get their top reasons
REASON_METHODS = ("compiled", "native")  # LightGBM contributions: compiled TreeSHAP | pred_contrib


def check_reasons(reasons) -> None:
    """conf/reasons/'s two choices (`make predict`, `make monitor`), with the options named."""
    from gymchurn.errors import GymchurnError

    if reasons.rows not in REASON_CHOICES:
        raise GymchurnError(f"reasons.rows={reasons.rows} is not an option: use one of "
                            f"{REASON_CHOICES}.")
    if reasons.method not in REASON_METHODS:
        raise GymchurnError(f"reasons.method={reasons.method} is not an option: use one of "
                            f"{list(REASON_METHODS)}.")
