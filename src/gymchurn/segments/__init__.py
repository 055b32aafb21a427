"""The segments road: customer portraits from clustering, tuned on several objectives at once."""

COLUMN_SUBSET_PARAM = "column_subset"  # the Optuna parameter that chooses the clustered columns
