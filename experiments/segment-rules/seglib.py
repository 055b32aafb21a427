"""Research helpers for issue 14: findable, distinct, useful customer segments.

Definitions used everywhere (stated once here):
- scaled space: chosen input columns; continuous columns standardised (optionally log1p
  first for the skewed Lifetime / charges), binary 0/1 columns either standardised ("std") or
  kept 0/1 ("bin01", i.e. about half the weight of a standardised binary) or 0/0.5 ("binhalf").
- fidelity of a rule to a segment: recall = |rule & seg| / |seg|, precision = |rule & seg| /
  |rule|; min over segments of min(recall, precision).
- distinct: per segment, columns whose (segment mean - rest mean) / overall std >= 0.5 in
  absolute value, over all 13 columns; near-duplicate pairs (|r| > 0.9: Contract_period ~
  Month_to_end_contract, Avg_class_frequency_total ~ _current_month) count once ("groups").
  The target is >= 3 groups for every segment, which with the contract pair counted once means
  at least two non-contract columns.
- stability: mean ARI between the full-data labels and refits on 20 bootstrap resamples, each
  refit assigning all customers (as gymchurn.segments.selection.bootstrap_stability).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

# The project's data file: ../shared/data beside the repository (GYMCHURN_DATA overrides).
DATA = os.environ.get("GYMCHURN_DATA",
                      str(Path(__file__).resolve().parents[3] / "shared/data/gym_churn_us.csv"))
COLUMNS = ["gender", "Near_Location", "Partner", "Promo_friends", "Phone", "Contract_period",
           "Group_visits", "Age", "Avg_additional_charges_total", "Month_to_end_contract",
           "Lifetime", "Avg_class_frequency_total", "Avg_class_frequency_current_month"]
BINARY = {"gender", "Near_Location", "Partner", "Promo_friends", "Phone", "Group_visits"}
CONTRACT = {"Contract_period", "Month_to_end_contract"}
GROUP = {c: c for c in COLUMNS}
GROUP["Month_to_end_contract"] = "Contract_period"
GROUP["Avg_class_frequency_total"] = "Avg_class_frequency_current_month"
SKEWED = {"Lifetime", "Avg_additional_charges_total"}


def load():
    d = pd.read_csv(DATA)
    return d[COLUMNS], d["Churn"].to_numpy()


# ------------------------------------------------------------------ scaling


class Scaler:
    """Fit on a sample, transform any rows: the clustering space."""

    def __init__(self, cols, binary="std", log=False):
        self.cols, self.binary, self.log = list(cols), binary, log

    def _pre(self, X):
        A = X[self.cols].to_numpy(dtype=float).copy()
        if self.log:
            for j, c in enumerate(self.cols):
                if c in SKEWED:
                    A[:, j] = np.log1p(A[:, j])
        return A

    def fit(self, X):
        A = self._pre(X)
        self.mean_, self.std_ = A.mean(0), A.std(0)
        self.std_[self.std_ == 0] = 1
        for j, c in enumerate(self.cols):
            if c in BINARY and self.binary != "std":
                self.mean_[j] = 0.0
                self.std_[j] = 1.0 if self.binary == "bin01" else 2.0
        return self

    def transform(self, X):
        return (self._pre(X) - self.mean_) / self.std_


# ------------------------------------------------------------------ clusterers


def make_clusterer(algo, k, seed, **kw):
    if algo == "kmeans":
        return KMeans(n_clusters=k, n_init=int(kw.get("n_init", 10)), random_state=seed)
    if algo == "gmm":
        return GaussianMixture(n_components=k, covariance_type=kw.get("cov", "full"),
                               reg_covar=1e-3, random_state=seed, n_init=int(kw.get("n_init", 1)))
    if algo == "agglo":
        return AgglomerativeClustering(n_clusters=k, linkage=kw.get("linkage", "ward"))
    raise ValueError(algo)


class ClusterModel:
    """scale -> cluster; predict new rows (agglomerative: 1-NN on fitted rows)."""

    def __init__(self, cols, binary, log, algo, k, seed, **kw):
        self.scaler = Scaler(cols, binary, log)
        self.algo, self.k, self.seed, self.kw = algo, k, seed, kw

    def fit(self, X):
        Z = self.scaler.fit(X).transform(X)
        self.est = make_clusterer(self.algo, self.k, self.seed, **self.kw)
        self.labels_ = np.asarray(self.est.fit_predict(Z))
        if not hasattr(self.est, "predict"):
            self.nn = KNeighborsClassifier(1, algorithm="brute").fit(Z, self.labels_)
        return self

    def predict(self, X):
        Z = self.scaler.transform(X)
        if hasattr(self.est, "predict"):
            return np.asarray(self.est.predict(Z))
        return self.nn.predict(Z)


# ------------------------------------------------------------------ rules (trees)


def tree_paths(tree, feature_names):
    """leaf id -> list of (column, '<=' | '>', threshold) from the root."""
    t = tree.tree_
    out = {}

    def walk(node, path):
        if t.children_left[node] == -1:
            out[node] = path
            return
        f, thr = feature_names[t.feature[node]], t.threshold[node]
        walk(t.children_left[node], path + [(f, "<=", thr)])
        walk(t.children_right[node], path + [(f, ">", thr)])

    walk(0, [])
    return out


def simplify(path):
    """Merge conditions on the same column into one range (a CRM 'between' filter)."""
    lo, hi, order = {}, {}, []
    for c, op, thr in path:
        if c not in order:
            order.append(c)
        if op == "<=":
            hi[c] = min(hi.get(c, np.inf), thr)
        else:
            lo[c] = max(lo.get(c, -np.inf), thr)
    return [(c, lo.get(c, -np.inf), hi.get(c, np.inf)) for c in order]


def fmt_rule(ranges):
    parts = []
    for c, lo, hi in ranges:
        if np.isfinite(lo) and np.isfinite(hi):
            parts.append(f"{lo:.2f} < {c} <= {hi:.2f}")
        elif np.isfinite(lo):
            parts.append(f"{c} > {lo:.2f}")
        else:
            parts.append(f"{c} <= {hi:.2f}")
    return " AND ".join(parts) if parts else "everyone"


def collapsed_leaves(tree, leaf_class):
    """Collapse subtrees whose leaves all map to one class: returns [(node, class, path)]."""
    t = tree.tree_
    names = None
    res = []

    def classes(node):
        if t.children_left[node] == -1:
            return {leaf_class[node]}
        return classes(t.children_left[node]) | classes(t.children_right[node])

    def walk(node, path):
        cs = classes(node)
        if len(cs) == 1:
            res.append((node, next(iter(cs)), path))
            return
        walk(t.children_left[node], path + [(t.feature[node], "<=", t.threshold[node])])
        walk(t.children_right[node], path + [(t.feature[node], ">", t.threshold[node])])

    walk(0, [])
    del names
    return res


def fit_rule(Xraw, labels, n_leaves, seed=0, depth=3, min_leaf=None):
    """Shallow CART fitted to the cluster labels; returns (tree, rule labels, rule info)."""
    cols = list(Xraw.columns)
    tree = DecisionTreeClassifier(max_depth=depth, max_leaf_nodes=n_leaves, random_state=seed,
                                  min_samples_leaf=min_leaf or 1)
    tree.fit(Xraw.to_numpy(dtype=float), labels)
    return tree, rule_info(tree, cols, Xraw, labels)


def rule_info(tree, cols, Xraw, labels):
    A = Xraw.to_numpy(dtype=float)
    leaf = tree.apply(A)
    pred = tree.classes_[tree.tree_.value[:, 0, :].argmax(1)]
    leaf_class = {n: pred[n] for n in range(tree.tree_.node_count)}
    rule_labels = np.array([leaf_class[n] for n in leaf])
    segs = collapsed_leaves(tree, leaf_class)
    per = {}
    for c in np.unique(labels):
        pieces = [(n, p) for n, cl, p in segs if cl == c]
        if len(pieces) == 1:
            ranges = simplify([(cols[f], op, thr) for f, op, thr in pieces[0][1]])
            n_cond, text = len(ranges), fmt_rule(ranges)
        elif not pieces:
            n_cond, text = 99, "(no leaf)"
        else:
            rs = [simplify([(cols[f], op, thr) for f, op, thr in p]) for _, p in pieces]
            n_cond = sum(len(r) for r in rs)
            text = " OR ".join("(" + fmt_rule(r) + ")" for r in rs)
        sel, inside = rule_labels == c, labels == c
        both = (sel & inside).sum()
        per[int(c)] = dict(precision=both / max(sel.sum(), 1), recall=both / inside.sum(),
                           conditions=n_cond, rule=text)
    fid = min(min(v["precision"], v["recall"]) for v in per.values())
    maxcond = max(v["conditions"] for v in per.values())
    return dict(rule_labels=rule_labels, fidelity=fid, max_conditions=maxcond, per=per,
                leaf=leaf)


# ------------------------------------------------------------------ scores


def std_diffs(X, labels):
    std = X.std(ddof=0).replace(0, np.nan)
    rows = {}
    for s in np.unique(labels):
        inside = labels == s
        rows[int(s)] = ((X[inside].mean() - X[~inside].mean()) / std).fillna(0)
    return pd.DataFrame(rows).T


def distinct_groups(diffs, min_effect=0.5):
    """Per segment: (#groups with |d| >= min_effect, #non-contract groups, columns list)."""
    out = {}
    for s, row in diffs.iterrows():
        cols = [c for c in row.index if abs(row[c]) >= min_effect]
        groups = {GROUP[c] for c in cols}
        out[s] = (len(groups), len([g for g in groups if g not in CONTRACT]), cols)
    return out


def label_scores(X, churn, labels, Z=None, sil=True):
    labels = np.asarray(labels)
    segs, counts = np.unique(labels, return_counts=True)
    rates = np.array([churn[labels == s].mean() for s in segs])
    dg = distinct_groups(std_diffs(X, labels))
    res = dict(k=len(segs), min_share=counts.min() / len(labels),
               churn_min=rates.min(), churn_max=rates.max(),
               min_groups=min(v[0] for v in dg.values()),
               min_noncontract=min(v[1] for v in dg.values()),
               n_seg_3groups=sum(v[0] >= 3 for v in dg.values()))
    if sil and Z is not None and len(segs) > 1:
        res["silhouette"] = silhouette_score(Z, labels)
    return res


def stability(build, X, labels, n_boot=20, seed=42, rule=False):
    """build() -> object with fit(X) and predict(X) (rule=True: predicts rule labels)."""
    rng = np.random.default_rng(seed)
    aris = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(X), len(X))
        m = build().fit(X.iloc[rows].reset_index(drop=True))
        aris.append(adjusted_rand_score(labels, m.predict(X)))
    return float(np.mean(aris)), float(np.std(aris))


def meets(r):
    """Targets of issue 14; returns dict of booleans."""
    return dict(
        fidelity=r.get("fidelity", 1) >= 0.9 and r.get("max_conditions", 0) <= 3,
        distinct=r["min_groups"] >= 3,
        churn=r["churn_min"] <= 0.05 and r["churn_max"] >= 0.5,
        k=4 <= r["k"] <= 6,
        share=r["min_share"] >= 0.05,
        stability=r.get("ari", 1) >= 0.9,
    )


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t
