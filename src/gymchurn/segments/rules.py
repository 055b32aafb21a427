"""Segments a CRM can find: each segment a rule over the raw columns (a leaf of a shallow
decision tree fitted to the clusters), with the measures that say whether the portraits are
findable and distinct (issue 14; experiments/segmentation-study.md).

- **Rule fidelity**: for each rule (leaf), the share of its cluster's members it selects
  (recall) and the share of its selection that belongs to that cluster (precision).
- **Distinct column groups**: the columns on which a segment differs from the rest of the
  customers by at least `min_effect` standard deviations, near-duplicate columns (|r| above
  `max_r`) counted once, so contract length and months left count as one.
- **Correlated inputs**: pairs of clustering inputs that are near duplicates; clustering on
  both weighs the same information twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted


class RuleAssigner(ClusterMixin, BaseEstimator):
    """Segments = the leaves of a decision tree (depth <= `max_depth`, at most `max_leaves`
    leaves) fitted on the raw clustering inputs to the cluster labels `y`. Segments are
    numbered 0, 1, ... from the largest; a new customer gets the segment of the leaf its
    columns lead to, which is exactly what the printed rule says."""

    def __init__(self, max_depth: int = 3, max_leaves: int = 6, random_state: int = 0):
        self.max_depth = max_depth
        self.max_leaves = max_leaves
        self.random_state = random_state

    def fit(self, X, y):
        from sklearn.tree import DecisionTreeClassifier

        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth,
                                            max_leaf_nodes=max(2, self.max_leaves),
                                            random_state=self.random_state).fit(X, y)
        leaf = self.tree_.apply(X)
        found, counts = np.unique(leaf, return_counts=True)
        # Largest first; ties by leaf id (stable), so fits are repeatable.
        self.leaves_ = found[np.argsort(-counts, kind="stable")]
        self.labels_ = self.segments_of(leaf)
        self.n_segments_ = len(self.leaves_)
        return self

    def segments_of(self, leaf: np.ndarray) -> np.ndarray:
        lookup = np.full(self.tree_.tree_.node_count, -1, dtype=np.int64)
        lookup[self.leaves_] = np.arange(len(self.leaves_))
        return lookup[leaf]

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "tree_")
        return self.segments_of(self.tree_.apply(X))


def rule_fidelity(segments, clusters) -> pd.DataFrame:
    """Per segment (a rule's selection): the cluster most of it belongs to, the share of that
    cluster the rule selects (recall), the share of the selection in the cluster (precision),
    and the smaller of the two."""
    segments, clusters = np.asarray(segments), np.asarray(clusters)
    rows = []
    for s in np.unique(segments):
        chosen = segments == s
        cluster = int(np.bincount(clusters[chosen]).argmax())
        both = int((chosen & (clusters == cluster)).sum())
        recall, precision = both / int((clusters == cluster).sum()), both / int(chosen.sum())
        rows.append({"segment": int(s), "cluster": cluster, "recall": recall,
                     "precision": precision, "fidelity": min(recall, precision)})
    return pd.DataFrame(rows)


def column_groups(customers: pd.DataFrame, max_r: float = 0.9) -> dict[str, str]:
    """Each column -> the first column of its group of near duplicates (|r| > `max_r`,
    transitively), so that near-duplicate columns count once."""
    columns = list(customers.columns)
    corr = customers.corr().abs().fillna(0.0)
    group = {c: c for c in columns}

    def root(c: str) -> str:
        while group[c] != c:
            c = group[c]
        return c

    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            if corr.loc[a, b] > max_r:
                group[root(b)] = root(a)
    return {c: root(c) for c in columns}


def distinct_groups(customers: pd.DataFrame, segments, groups: dict[str, str],
                    min_effect: float = 0.5) -> dict[int, list[str]]:
    """Per segment, the columns (one per group of near duplicates, the strongest) on which its
    mean differs from the rest of the customers by at least `min_effect` standard deviations of
    the whole table."""
    segments = np.asarray(segments)
    spread = customers.std(ddof=0).replace(0.0, np.nan)
    found = {}
    for s in np.unique(segments):
        inside = segments == s
        effect = ((customers[inside].mean() - customers[~inside].mean()) / spread).abs()
        strongest: dict[str, tuple[float, str]] = {}
        for column, size in effect.dropna().items():
            if size >= min_effect and size > strongest.get(groups[column], (-1.0, ""))[0]:
                strongest[groups[column]] = (float(size), column)
        found[int(s)] = [column for _, column in sorted(strongest.values(), reverse=True)]
    return found


def correlated_pairs(customers: pd.DataFrame, inputs: Sequence[str],
                     max_r: float = 0.9) -> list[tuple[str, str, float]]:
    """Pairs of clustering inputs with |r| above `max_r` (the guard: none is allowed)."""
    corr = customers[list(inputs)].corr()
    return [(a, b, float(corr.loc[a, b])) for i, a in enumerate(inputs) for b in inputs[i + 1:]
            if abs(corr.loc[a, b]) > max_r]


def segment_rules(assigner: RuleAssigner, X: pd.DataFrame, data_columns: Mapping,
                  labels: Mapping[str, str], phrases: Mapping) -> pd.DataFrame:
    """Per segment of a fitted `RuleAssigner`: its rule in words, as a filter expression over
    the raw columns (which selects exactly the segment's customers in `X`), the columns it
    uses and its number of conditions (a range on one column is one condition)."""
    from gymchurn.rules import leaf_bounds, rule_expression, rule_words

    columns = list(assigner.feature_names_in_)
    bounds = leaf_bounds(assigner.tree_, columns)
    rows = []
    for segment, leaf in enumerate(assigner.leaves_.tolist()):
        own = bounds[leaf]
        rows.append({"segment": segment,
                     "rule": " and ".join(rule_words(own, X, data_columns, labels, phrases))
                     or "every customer",
                     "filter": rule_expression(own, X, data_columns),
                     "rule_columns": list(own), "conditions": len(own)})
    return pd.DataFrame(rows)
