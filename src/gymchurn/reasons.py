"""Reasons stage: each customer's top churn drivers, from exact per-customer SHAP contributions.

Exact contributions come from the model's own library (experiments/predict-benchmark.md
compares the paths measured):

- LightGBM: `Booster.predict(X, pred_contrib=True)` (TreeSHAP in C++, OpenMP over rows), tree
  by tree on the distinct split patterns only (LightGBMContributions: same numbers, faster);
- XGBoost: `Booster.predict(DMatrix, pred_contribs=True)`;
- linear models: coefficient x standardised value (exact SHAP of a linear model whose inputs
  are centred, which the pipeline's StandardScaler makes them);
- any other tree model (random forest, ...): SHAP's TreeExplainer, the generic fallback.

Contributions are in the model's raw output units (log-odds for boosting and logistic
regression, probability for a random forest). They are taken on the features the estimator
sees, so engineered features (visit_trend, ...) appear under their own names.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from gymchurn.errors import GymchurnError

REASON_COLUMNS = ["reason_1", "reason_2", "reason_3"]


def model_input(pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """What the final estimator sees: X through every step before `model` (named features)."""
    return pipeline[:-1].transform(X) if len(pipeline.steps) > 1 else X


def distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each key, index of one key of each group), like np.unique's inverse and
    index, by hashing instead of sorting (several times faster on 250,000 keys). Any member
    represents its group: all of them have the same contributions."""
    groups, uniques = pd.factorize(keys)
    member = np.empty(len(uniques), dtype=np.int64)
    member[groups] = np.arange(len(keys))
    return groups, member


class LightGBMContributions:
    """Exact TreeSHAP contributions of a LightGBM model, one tree at a time, once per pattern.

    A tree's contributions for a customer depend only on which side of each of that tree's
    splits the customer falls (TreeSHAP reads the features through those comparisons alone).
    Customers on the same side of every split of a tree get the same contributions from it, so
    each tree is evaluated (LightGBM's own `pred_contrib`, restricted to that tree) on one
    customer per distinct pattern and the result is copied to the others. Same numbers as
    `pred_contrib` on every row (the tests check it), about 9x faster on 250,000 rows
    (experiments/predict-benchmark.md). Trees are shared out over `n_jobs` threads. Models
    with categorical splits or zero-as-missing, and rows with missing values, take the plain
    `pred_contrib` call.
    """

    min_rows = 10_000  # below this, one plain call is faster than one call per tree

    def __init__(self, estimator):
        self.booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator
        trees, simple = [], True
        for tree in self.booster.dump_model()["tree_info"]:
            thresholds: dict[int, set] = {}
            stack = [tree["tree_structure"]]
            while stack:
                node = stack.pop()
                if "leaf_value" in node or "split_feature" not in node:
                    continue
                simple &= node["decision_type"] == "<=" and node["missing_type"] in ("None", "NaN")
                thresholds.setdefault(node["split_feature"], set()).add(node["threshold"])
                stack += [node["left_child"], node["right_child"]]
            trees.append({f: np.array(sorted(t)) for f, t in sorted(thresholds.items())})
        self.by_pattern = simple
        self.boosters: list = []
        # Every threshold of a feature over all trees: one binning of the data per call; each
        # tree then maps a global bin to its own interval with a lookup (`x <= t` goes left).
        features = sorted({f for tree in trees for f in tree})
        self.cuts = {f: np.unique(np.concatenate([t[f] for t in trees if f in t])) for f in features}
        self.trees = [
            [(f, np.r_[0, np.searchsorted(local, self.cuts[f], side="right")], len(local) + 1)
             for f, local in tree.items()]
            for tree in trees
        ]

    def _booster(self, k: int):
        """The k-th thread's own copy: LightGBM keeps the trees to predict with in the booster,
        so two threads predicting different trees on one booster would overwrite each other."""
        import lightgbm

        while len(self.boosters) <= k:
            self.boosters.append(lightgbm.Booster(model_str=self.booster.model_to_string()))
        return self.boosters[k]

    def _trees(self, booster, bins: dict, X: np.ndarray, tree_ids) -> np.ndarray:
        out = np.zeros((len(X), X.shape[1] + 1))
        for i in tree_ids:
            pattern = np.zeros(len(X), dtype=np.int64)
            for feature, lookup, n_intervals in self.trees[i]:
                pattern = pattern * n_intervals + lookup[bins[feature]]
            inverse, first = distinct(pattern)  # first: one customer per pattern
            tree = booster.predict(X[first], start_iteration=i, num_iteration=1,
                                   pred_contrib=True, num_threads=1)
            out += tree[inverse]
        return out

    def __call__(self, X: np.ndarray, n_jobs: int) -> np.ndarray:
        if not self.by_pattern or len(X) < self.min_rows or np.isnan(X).any():
            return self.booster.predict(X, pred_contrib=True, num_threads=n_jobs)[:, :-1]
        bins = {f: np.searchsorted(cuts, X[:, f]) for f, cuts in self.cuts.items()}
        n_jobs = max(n_jobs, 1)
        boosters = [self._booster(k) for k in range(n_jobs)]
        with ThreadPoolExecutor(n_jobs) as pool:  # numpy and LightGBM release the GIL
            parts = list(pool.map(
                lambda k: self._trees(boosters[k], bins, X, range(k, len(self.trees), n_jobs)),
                range(n_jobs)))
        return sum(parts)[:, :-1]  # the last column is the expected value (bias)


def _xgboost(estimator):
    import xgboost

    booster = estimator.get_booster() if hasattr(estimator, "get_booster") else estimator

    def contrib(X: np.ndarray, n_jobs: int) -> np.ndarray:
        booster.set_param({"nthread": n_jobs})
        data = xgboost.DMatrix(X, feature_names=booster.feature_names, nthread=n_jobs)
        return booster.predict(data, pred_contribs=True)[:, :-1]
    return contrib


def _linear(estimator):
    coef = np.asarray(estimator.coef_, dtype=float).reshape(1, -1)
    return lambda X, n_jobs: X * coef


def _tree_explainer(estimator):
    import shap

    explainer = shap.TreeExplainer(estimator)

    def contrib(X: np.ndarray, n_jobs: int) -> np.ndarray:
        values = explainer.shap_values(X, check_additivity=False)
        if isinstance(values, list):  # older SHAP: one array per class
            values = values[1]
        values = np.asarray(values)
        return values[:, :, 1] if values.ndim == 3 else values  # (rows, features, classes)
    return contrib


def contribution_method(estimator):
    """(name, function(X, n_jobs) -> contributions) of the exact method for this estimator."""
    module = type(estimator).__module__
    if module.startswith("lightgbm"):
        return "lightgbm pred_contrib per tree pattern", LightGBMContributions(estimator)
    if module.startswith("xgboost"):
        return "xgboost pred_contribs", _xgboost(estimator)
    if hasattr(estimator, "coef_") and np.asarray(estimator.coef_).shape[0] == 1:
        return "linear coef x standardised value", _linear(estimator)
    if hasattr(estimator, "estimators_") or hasattr(estimator, "tree_"):
        return "shap TreeExplainer", _tree_explainer(estimator)
    raise GymchurnError(
        f"no exact per-customer reasons for a {type(estimator).__name__} model. "
        "Score with reasons=none."
    )


def contributions(method, X: pd.DataFrame, n_jobs: int = 2, batch_rows: int = 250_000,
                  progress=None) -> np.ndarray:
    """Exact SHAP contributions (rows x features) for the rows of X, by `method` (the function
    from `contribution_method`). Batches bound memory and let `progress(done, total)` report;
    inside a batch the library uses `n_jobs` threads."""
    values = X.to_numpy(dtype=np.float64)
    out = np.empty(values.shape, dtype=np.float64)
    for start in range(0, len(values), batch_rows):
        stop = min(start + batch_rows, len(values))
        out[start:stop] = method(values[start:stop], n_jobs)
        if progress is not None:
            progress(stop, len(values))
    return out


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def top_reasons(contrib: np.ndarray, X: pd.DataFrame, k: int = 3) -> list[list[str | None]]:
    """For each row, its `k` features that raise the churn risk most, as "name = value (+effect)".

    Only features that push towards churn count: a customer with fewer than `k` of them gets
    None for the rest.
    """
    names = np.asarray(X.columns)
    values = X.to_numpy(dtype=np.float64)
    k = min(k, contrib.shape[1])
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(contrib))[:, None]
    top_effect = contrib[rows, top]
    top_value = values[rows, top]
    reasons = []
    for j in range(k):
        column = [
            f"{names[f]} = {_format_value(v)} (+{e:.2f})" if e > 0 else None
            for f, v, e in zip(top[:, j], top_value[:, j], top_effect[:, j], strict=True)
        ]
        reasons.append(column)
    return reasons
