"""The segmentation model: an sklearn Pipeline (select the clustered columns -> `RuleSegments`),
taking the raw customer columns like the churn model. `RuleSegments` clusters the customers in
a scaled space (preprocessing -> `SegmentAssigner`, built by `gymchurn.pipeline.build_pipeline`)
and then fits a shallow decision tree on the raw columns to those clusters: the tree's leaves
are the segments, so each segment is a rule a CRM can filter and a new customer gets exactly
the segment its rule says. Churn is never a clustering input: it only scores and describes the
segments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, clone
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from gymchurn.errors import GymchurnError
from gymchurn.segments.rules import RuleAssigner

SEGMENT_COLUMN, NAME_COLUMN = "segment", "segment_name"  # the served model's two outputs


class LogColumns(TransformerMixin, BaseEstimator):
    """log1p of the named columns that are present (the others pass unchanged).

    Why: tenure is right-skewed (median 3 months, maximum 31); on the raw scale k-means spends
    a centre on the long-tenure tail instead of the new-versus-settled split that matters for
    churn (experiments/segmentation-study.md, issue 14)."""

    def __init__(self, columns: Sequence[str] = ()):
        self.columns = columns

    def fit(self, X, y=None):
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "feature_names_in_")
        X = X.copy()
        for column in self.columns:
            if column in X.columns:
                X[column] = np.log1p(X[column].astype(float))
        return X

    def get_feature_names_out(self, input_features=None):
        return self.feature_names_in_


class SegmentAssigner(ClusterMixin, BaseEstimator):
    """Cluster the rows it is fitted on, number the segments by size, assign new rows.

    `clusterer` is any sklearn clusterer. Segments are numbered 0, 1, ... from the largest, so
    ids do not depend on the clusterer's arbitrary label order. New rows go to the segment the
    clusterer predicts (k-means, Gaussian mixtures). Clusterers without `predict`
    (agglomerative) get a 1-nearest-neighbour assigner on the fitted rows: it reproduces the
    training labels exactly and extends them to new customers.
    """

    def __init__(self, clusterer=None):
        self.clusterer = clusterer

    def fit(self, X, y=None):
        if self.clusterer is None:
            raise ValueError("SegmentAssigner needs a clusterer.")
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        X = np.asarray(X, dtype=float)
        self.n_features_in_ = X.shape[1]
        clusterer = clone(self.clusterer)
        raw = np.asarray(clusterer.fit_predict(X))
        found, counts = np.unique(raw, return_counts=True)
        # Largest first; ties keep the clusterer's order (stable sort), so fits are repeatable.
        self.raw_labels_ = found[np.argsort(-counts, kind="stable")]
        self.labels_ = self._to_segments(raw)
        self.n_segments_ = len(self.raw_labels_)
        self.centroids_ = np.vstack([X[self.labels_ == s].mean(axis=0)
                                     for s in range(self.n_segments_)])
        self.clusterer_ = clusterer
        self.nearest_ = None
        if not hasattr(clusterer, "predict"):
            # Brute force keeps the saved model free of tree objects; 1-NN on a few thousand
            # rows is fast enough for scoring.
            self.nearest_ = KNeighborsClassifier(n_neighbors=1, algorithm="brute").fit(
                X, self.labels_
            )
        return self

    def _to_segments(self, raw: np.ndarray) -> np.ndarray:
        """Clusterer labels -> segment ids; labels never seen in fit become -1."""
        lookup = {label: segment for segment, label in enumerate(self.raw_labels_.tolist())}
        return np.array([lookup.get(label, -1) for label in raw.tolist()], dtype=np.int64)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "labels_")
        X = np.asarray(X, dtype=float)
        if self.nearest_ is not None:
            return self.nearest_.predict(X).astype(np.int64)
        segments = self._to_segments(np.asarray(self.clusterer_.predict(X)))
        unseen = segments < 0
        if unseen.any():
            # A mixture component that got no customers in fit can still win for a new row:
            # send such rows to the nearest segment centre instead.
            distances = ((X[unseen, None, :] - self.centroids_[None]) ** 2).sum(axis=2)
            segments[unseen] = distances.argmin(axis=1)
        return segments


class RuleSegments(ClusterMixin, BaseEstimator):
    """Clusters in a scaled space, made findable: a decision tree of depth <= `max_depth` with at
    most `max_leaves` leaves (None: as many as clusters), fitted on the raw columns to the
    cluster labels. The leaves are the segments (numbered from the largest); `predict` applies
    the tree, so a segment is exactly its printed rule. `clusters_` keeps the clusters the rules
    describe (rule fidelity compares the two)."""

    def __init__(self, clustering=None, max_depth: int = 3, max_leaves: int | None = None,
                 random_state: int = 0):
        self.clustering = clustering
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.random_state = random_state

    def fit(self, X, y=None):
        if self.clustering is None:
            raise ValueError("RuleSegments needs a clustering pipeline.")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.clustering_ = clone(self.clustering).fit(X)
        self.clusters_ = self.clustering_[-1].labels_
        leaves = self.max_leaves or len(np.unique(self.clusters_))
        self.rules_ = RuleAssigner(self.max_depth, leaves, self.random_state).fit(X, self.clusters_)
        self.labels_ = self.rules_.labels_
        self.n_segments_ = self.rules_.n_segments_
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "rules_")
        return self.rules_.predict(X[list(self.feature_names_in_)])


def build_segmentation(clustering_cfg: Mapping, columns: Sequence[str],
                       params: Mapping | None = None, rules: Mapping | None = None) -> Pipeline:
    """The segmentation pipeline: select `columns` -> RuleSegments(preprocessing ->
    SegmentAssigner(clusterer)), the rule tree shaped by `rules` (max_depth, max_leaves).

    `params` are clusterer arguments (a trial's or the chosen ones). The clustering part is
    built by the churn pipeline's own builder, so errors in `_target_`s read the same.
    """
    from gymchurn.pipeline import build_pipeline

    def resolved(node):
        # Interpolations such as ${seed} must be resolved before the node leaves its config.
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    model_cfg = {
        "preprocessing": resolved(clustering_cfg.get("preprocessing")) or [],
        "estimator": {
            "_target_": f"{SegmentAssigner.__module__}.{SegmentAssigner.__name__}",
            "clusterer": resolved(clustering_cfg["estimator"]),
        },
    }
    clustering = build_pipeline({"steps": []}, model_cfg, columns, {"clusterer": dict(params or {})})
    rules = dict(resolved(rules) or {})
    segments = RuleSegments(Pipeline(clustering.steps[1:]).set_output(transform="pandas"),
                            int(rules.get("max_depth", 3)), rules.get("max_leaves"),
                            int(rules.get("random_state", 0)))
    return Pipeline([clustering.steps[0], ("segments", segments)]).set_output(transform="pandas")


def scaled_inputs(pipeline: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """What the clusterer saw: the selected columns after preprocessing (log, standardised)."""
    return pipeline[-1].clustering_[:-1].transform(pipeline[:-1].transform(X))


def assign_segments(model, X: pd.DataFrame) -> pd.DataFrame:
    """Segment id and name per customer from a registered segmentation (its pyfunc model).

    The python model itself is called, as the churn model is for `make predict`: its own check
    of the data rules (gymchurn.serving.checked_input) is what MLflow's signature check would
    repeat, value by value for the `Any` columns of current versions (0.65 s per 100,000 rows),
    and, for the typed ones of older versions, refusing int64 where they declare double."""
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.has_input_names():  # the signature's columns, in its order
        missing = [c for c in schema.input_names() if c not in X.columns]
        if missing:
            raise GymchurnError(f"the segmentation model needs the column(s) {', '.join(missing)}, "
                                "which the customer table lacks; add them (conf/data/gym.yaml "
                                "lists the columns).")
        X = X[schema.input_names()]
    result = model.unwrap_python_model().predict(None, X)
    missing = {SEGMENT_COLUMN, NAME_COLUMN} - set(result.columns)
    if missing:
        raise GymchurnError(
            f"the segmentation model returned columns {list(result.columns)}, without "
            f"{sorted(missing)}; re-register it with the current segments/served.py."
        )
    return result[[SEGMENT_COLUMN, NAME_COLUMN]].reset_index(drop=True)
