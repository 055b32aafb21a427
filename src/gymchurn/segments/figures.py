"""The segmentation run's figures, as plain matplotlib objects."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_samples

from gymchurn.plots import plt
from gymchurn.segments import COLUMN_SUBSET_PARAM


def _segment_colours(n: int):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]


def segment_map_figure(X_scaled, labels, names: Mapping[int, str], seed: int = 0) -> plt.Figure:
    """Customers on the first two principal components of the clustered columns."""
    X_scaled = np.asarray(X_scaled, dtype=float)
    labels = np.asarray(labels)
    pca = PCA(n_components=2, random_state=seed).fit(X_scaled)
    points = pca.transform(X_scaled)
    # Many customers share exactly the same values (contract lengths, binary columns):
    # a little jitter shows how many sit on each spot.
    points = points + np.random.default_rng(seed).normal(0, 0.04, points.shape)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    segments = sorted(np.unique(labels))
    for colour, s in zip(_segment_colours(len(segments)), segments, strict=True):
        inside = labels == s
        ax.scatter(points[inside, 0], points[inside, 1], s=6, alpha=0.35, color=colour,
                   label=f"{s}: {names[int(s)]} ({inside.mean():.0%})")
    ratio = pca.explained_variance_ratio_
    ax.set_xlabel(f"PC 1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({ratio[1]:.0%} of variance)")
    ax.set_title("Segments on a 2-D map (PCA of the clustered columns, jittered)")
    ax.legend(fontsize=7, markerscale=3, loc="best")
    fig.tight_layout()
    return fig


def silhouette_figure(X_scaled, labels, names: Mapping[int, str]) -> plt.Figure:
    """Each customer's silhouette, grouped by segment, with the mean as a dashed line."""
    labels = np.asarray(labels)
    values = silhouette_samples(np.asarray(X_scaled, dtype=float), labels)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    bottom = 0
    segments = sorted(np.unique(labels))
    for colour, s in zip(_segment_colours(len(segments)), segments, strict=True):
        own = np.sort(values[labels == s])
        ax.fill_betweenx(np.arange(bottom, bottom + len(own)), 0, own, color=colour, alpha=0.8)
        ax.text(-0.02, bottom + len(own) / 2, f"{s}: {names[int(s)]}", ha="right", va="center",
                fontsize=7)
        bottom += len(own) + 20
    ax.axvline(values.mean(), color="black", linestyle="--", linewidth=1,
               label=f"mean {values.mean():.3f}")
    ax.set_xlim(min(-0.1, values.min() - 0.05), 1)
    ax.set_yticks([])
    ax.set_xlabel("silhouette")
    ax.set_title("Silhouette of every customer, by segment")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def profile_heatmap(differences: pd.DataFrame, portraits: pd.DataFrame,
                    clustered: Sequence[str]) -> plt.Figure:
    """Segments x columns, coloured by standardised difference, annotated with the means.

    Clustered columns are marked with *; the others show how the segments differ on what the
    clustering never saw.
    """
    order = portraits.sort_values("churn_rate")["segment"].tolist()
    columns = list(differences.columns)
    data = differences.loc[order, columns].to_numpy(dtype=float)
    means = portraits.set_index("segment").loc[order, columns].to_numpy(dtype=float)
    limit = max(1.0, float(np.nanmax(np.abs(data))))
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 3, 0.6 * len(order) + 2.5))
    image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(order)):
        for j in range(len(columns)):
            ax.text(j, i, f"{means[i, j]:.3g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(columns)),
                  [f"{c}{' *' if c in clustered else ''}" for c in columns],
                  rotation=40, ha="right", fontsize=8)
    rows = portraits.set_index("segment").loc[order]
    ax.set_yticks(range(len(order)), [f"{s}: {rows.loc[s, 'name']} (churn "
                                      f"{rows.loc[s, 'churn_rate']:.0%})" for s in order],
                  fontsize=8)
    fig.colorbar(image, ax=ax, label="std. difference from the other customers")
    ax.set_title("Feature profile per segment (cell text: segment mean; * = clustered column)")
    fig.tight_layout()
    return fig


def dendrogram_figure(X_scaled, linkage: str, n_segments: int) -> plt.Figure:
    """The merge tree of agglomerative clustering (same linkage, same inputs), cut at
    `n_segments`; the top merges only, as a full tree of thousands of leaves is unreadable."""
    from scipy.cluster.hierarchy import dendrogram
    from scipy.cluster.hierarchy import linkage as build_linkage

    tree = build_linkage(np.asarray(X_scaled, dtype=float), method=linkage)
    cut = tree[-(n_segments - 1), 2] if n_segments > 1 else tree[-1, 2]
    fig, ax = plt.subplots(figsize=(9, 5))
    dendrogram(tree, truncate_mode="lastp", p=max(30, 3 * n_segments), ax=ax,
               color_threshold=cut, show_leaf_counts=True, leaf_font_size=7)
    ax.axhline(cut, color="grey", linestyle="--", linewidth=1,
               label=f"cut: {n_segments} segments")
    ax.set_ylabel(f"merge distance ({linkage} linkage)")
    ax.set_xlabel("customers (leaf labels: group sizes)")
    ax.set_title("Dendrogram (agglomerative clustering)")
    ax.legend()
    fig.tight_layout()
    return fig


def pareto_figure(study, objectives: Sequence[str], chosen: int) -> plt.Figure:
    """Every complete trial on the first two objectives: feasible ones coloured by column
    subset, infeasible ones as grey crosses, the Pareto front joined, the chosen one starred."""
    from optuna.trial import TrialState

    from gymchurn.tuning import is_feasible

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    x_name, y_name = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    infeasible = [t for t in complete if not is_feasible(t.constraints)]
    if infeasible:
        ax.scatter([t.user_attrs[x_name] for t in infeasible],
                   [t.user_attrs[y_name] for t in infeasible],
                   marker="x", color="lightgrey", label="infeasible (constraints)")
    feasible = [t for t in complete if is_feasible(t.constraints)]
    subsets = sorted({t.params.get(COLUMN_SUBSET_PARAM, "?") for t in feasible})
    for colour, subset in zip(_segment_colours(len(subsets)), subsets, strict=True):
        own = [t for t in feasible if t.params.get(COLUMN_SUBSET_PARAM, "?") == subset]
        ax.scatter([t.user_attrs[x_name] for t in own], [t.user_attrs[y_name] for t in own],
                   s=18, color=colour, alpha=0.8, label=subset)
    front = sorted(study.best_trials, key=lambda t: t.user_attrs[x_name])
    if front:
        ax.plot([t.user_attrs[x_name] for t in front], [t.user_attrs[y_name] for t in front],
                color="black", linewidth=1, label="Pareto front")
    best = [t for t in complete if t.number == chosen]
    if best:
        ax.scatter([best[0].user_attrs[x_name]], [best[0].user_attrs[y_name]], marker="*",
                   s=250, color="gold", edgecolor="black", zorder=5, label=f"chosen (trial {chosen})")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("Trials and Pareto front")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def segmentation_figures(X_scaled, labels, names, differences, portraits, clustered,
                         linkage: str | None, seed: int) -> dict[str, plt.Figure]:
    """The run's portrait plots; the dendrogram only for agglomerative clustering."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout on long tick labels
        figures = {
            "segment_map": segment_map_figure(X_scaled, labels, names, seed),
            "silhouette": silhouette_figure(X_scaled, labels, names),
            "feature_profile": profile_heatmap(differences, portraits, clustered),
        }
        if linkage:
            figures["dendrogram"] = dendrogram_figure(X_scaled, linkage,
                                                      len(np.unique(labels)))
    return figures
