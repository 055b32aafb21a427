"""gymchurn: churn prediction and customer segmentation for a gym chain, tracked in MLflow."""

__version__ = "0.1.0"
