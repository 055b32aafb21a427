"""Describing fitted segments for people (issue 14): each segment's rule in words and as a
filter, a generated name, a portrait paragraph over every column and one suggested measure;
and what assigning by rules instead of clusters costs in the clustering space."""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import OmegaConf


def rules_given_up(X_scaled: pd.DataFrame, segments, clusters) -> dict[str, float]:
    """What findability costs in the clustering space: the clusters' silhouette beside the
    rule segments' (the registered ones), and the rise in within-segment spread (sum of
    squared distances to the segment centres) from assigning by rules instead of clusters."""
    from sklearn.metrics import silhouette_score

    X = np.asarray(X_scaled, dtype=float)

    def spread(labels):
        labels = np.asarray(labels)
        return sum(float(((X[labels == s] - X[labels == s].mean(axis=0)) ** 2).sum())
                   for s in np.unique(labels))

    return {"cluster_silhouette": float(silhouette_score(X, clusters)),
            "rule_spread_increase": spread(segments) / spread(clusters) - 1.0}


def describe(p, pipeline, labels,
             differences: pd.DataFrame) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(rules, names, portraits) of fitted segments of the plan `p` (segments.fit): each rule
    in words and as a filter, a generated name, a portrait row with a paragraph and a
    suggested measure."""
    from gymchurn.churn.actions import load_catalogue
    from gymchurn.segments.portraits import (
        name_segments,
        portrait_paragraph,
        portrait_table,
        segment_measure,
    )
    from gymchurn.segments.rules import distinct_groups, segment_rules

    cfg, X, churn = p.cfg, p.X, p.churn
    pc, data = cfg.portraits, cfg.data
    rule_segments = pipeline[-1]
    rules = segment_rules(rule_segments.rules_, pipeline[:-1].transform(X),
                          OmegaConf.to_container(data.columns), dict(data.get("labels") or {}),
                          OmegaConf.to_container(pc.phrases))
    by_segment = rules.set_index("segment")
    names = name_segments(differences, pc.phrases, int(pc.name_words), float(pc.min_effect),
                          X.corr(), float(pc.max_correlation), float(pc.lean_effect),
                          {s: r for s, r in by_segment["rule_columns"].items()})
    portraits = portrait_table(X, labels, churn, names, differences, int(pc.top_features))
    distinct = distinct_groups(X, labels, p.groups, float(cfg.segmentation.distinct_min_effect))
    catalogue = load_catalogue(OmegaConf.to_container(cfg.measures, resolve=True))
    templates = OmegaConf.to_container(pc.templates) if pc.templates else {}
    extra = []
    for s in portraits["segment"]:
        inside = np.asarray(labels) == s
        measure = segment_measure(X[inside], churn[inside].to_numpy(), catalogue,
                                  list(by_segment.loc[s, "rule_columns"]) + distinct[s],
                                  float(pc.measure_min_cover))
        extra.append({"rule": by_segment.loc[s, "rule"], "filter": by_segment.loc[s, "filter"],
                      "distinct_columns": ", ".join(distinct[s]),
                      "n_distinct": len({p.groups[c] for c in distinct[s]}),
                      "portrait": portrait_paragraph(X[inside], templates),
                      "measure": measure["measure"], "action": measure["action"],
                      "measure_covers": measure["covers"],
                      "measure_covers_churned": measure["covers_churned"]})
    portraits = pd.concat([portraits, pd.DataFrame(extra, index=portraits.index)], axis=1)
    return rules, names, portraits
