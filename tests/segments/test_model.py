"""The segmentation model: segments are rules fitted to clusters; it assigns new customers by
the rule, numbers segments by size, saves safely (gymchurn.segments.model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.registry import load_pipeline, save_pipeline
from gymchurn.segments.model import LogColumns, build_segmentation


@pytest.mark.parametrize("clustering", ["kmeans", "gmm", "agglomerative"])
def test_segmentation_model_assigns_new_customers_and_saves_safely(tmp_path, customers, clustering):
    cfg = compose_config("segment", [f"clustering={clustering}"])
    X = customers[feature_columns(cfg.data)]
    columns = list(cfg.segmentation.column_subsets.tenure_groups_referral)
    space_arg = "n_components" if clustering == "gmm" else "n_clusters"
    model = build_segmentation(cfg.clustering, columns, {space_arg: 4},
                               cfg.segmentation.rules).fit(X)
    labels = model[-1].labels_
    sizes = np.bincount(labels)
    assert (np.diff(sizes) <= 0).all()  # numbered from the largest
    assert (model.predict(X) == labels).all()  # the rule assigns, for fitted and new rows alike
    # The tree is fitted on the raw columns to the clusters found in the scaled space.
    tree = model[-1].rules_.tree_
    assert tree.get_depth() <= 3 and tree.get_n_leaves() <= len(np.unique(model[-1].clusters_))
    new = make_synthetic_customers(50, seed=99)[feature_columns(cfg.data)]
    assigned = model.predict(new)
    assert set(assigned) <= set(range(4)) and len(assigned) == 50

    path = tmp_path / "model.skops"
    trusted = save_pipeline(model, path)
    assert {"gymchurn.segments.model.RuleSegments", "gymchurn.segments.model.LogColumns"} <= set(trusted)
    assert (load_pipeline(path, trusted).predict(new) == assigned).all()


def test_log_columns_transforms_only_the_named_columns_present():
    X = pd.DataFrame({"Lifetime": [0.0, 3.0, 30.0], "Age": [20.0, 30.0, 40.0]})
    out = LogColumns(["Lifetime", "Missing"]).fit(X).transform(X)
    assert np.allclose(out["Lifetime"], np.log1p([0, 3, 30])) and out["Age"].tolist() == [20, 30, 40]
    assert X["Lifetime"].tolist() == [0, 3, 30]  # the input is not changed
