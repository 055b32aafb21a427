"""The segmentation model: assigns new customers, numbers segments by size, saves safely
(gymchurn.segments.model)."""

from __future__ import annotations

import numpy as np
import pytest

from gymchurn.config import compose_config
from gymchurn.data import feature_columns, make_synthetic_customers
from gymchurn.registry import load_pipeline, save_pipeline
from gymchurn.segments.model import build_segmentation


@pytest.mark.parametrize("clustering", ["kmeans", "gmm", "agglomerative"])
def test_segmentation_model_assigns_new_customers_and_saves_safely(tmp_path, customers, clustering):
    cfg = compose_config("segment", [f"clustering={clustering}"])
    X = customers[feature_columns(cfg.data)]
    columns = list(cfg.segmentation.column_subsets.contract_tenure)
    space_arg = "n_components" if clustering == "gmm" else "n_clusters"
    model = build_segmentation(cfg.clustering, columns, {space_arg: 4}).fit(X)
    labels = model[-1].labels_
    sizes = np.bincount(labels)
    assert (np.diff(sizes) <= 0).all()  # numbered from the largest
    assert (model.predict(X) == labels).mean() > 0.99
    new = make_synthetic_customers(50, seed=99)[feature_columns(cfg.data)]
    assigned = model.predict(new)
    assert set(assigned) <= set(range(4)) and len(assigned) == 50

    path = tmp_path / "model.skops"
    trusted = save_pipeline(model, path)
    assert "gymchurn.segments.model.SegmentAssigner" in trusted
    assert (load_pipeline(path, trusted).predict(new) == assigned).all()
