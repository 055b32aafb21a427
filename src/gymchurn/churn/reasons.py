"""Reasons stage: each customer's top churn drivers, from exact per-customer SHAP contributions.

Exact contributions come from the model's own library (experiments/predict-benchmark.md
compares the paths measured):

- LightGBM: TreeSHAP tree by tree on the distinct split patterns only, compiled
  (LightGBMContributions: the numbers of LightGBM's own `pred_contrib`, many times faster);
- XGBoost: `Booster.predict(DMatrix, pred_contribs=True)`;
- linear models: coefficient x standardised value (exact SHAP of a linear model whose inputs
  are centred, which the pipeline's StandardScaler makes them);
- any other tree model (random forest, ...): SHAP's TreeExplainer, the generic fallback.

Contributions are in the model's raw output units (log-odds for boosting and logistic
regression, probability for a random forest). They are taken on the features the estimator
sees, so engineered features (visit_trend, ...) appear under their own names.

Two wordings of a customer's top reasons: `top_reasons` for analysts ("visit_trend = 0.3
(+1.20)": feature, value, contribution) and `reason_words` for the people who call customers
("this month's visits against the average = 0.3": the plain name from conf/data/gym.yaml
`labels`, or `negative_labels` for a negative value, and the customer's own value rounded for
people, no model units).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from gymchurn.errors import GymchurnError

REASON_COLUMNS = ["reason_1", "reason_2", "reason_3"]


def model_input(pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """What the final estimator sees: X through every step before `model` (named features)."""
    return pipeline[:-1].transform(X) if len(pipeline.steps) > 1 else X


def reason_values(pipeline, X: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """The values a reason in words shows for the rows of X: the model's features before the
    scaling steps of gymchurn.pipeline (named `preprocess_*`), so it reads "months as a member
    = 2", not a standardised -0.8. `features` (the same rows through every step before the
    model) is returned as it is when there is no such step, or when it renames the features."""
    steps = [name for name, _ in pipeline.steps[:-1]]
    first_scaling = next((i for i, name in enumerate(steps) if name.startswith("preprocess_")), None)
    if not first_scaling:  # None: nothing scales the features; 0: no feature step before it
        return features
    values = pipeline[:first_scaling].transform(X)
    return values if list(values.columns) == list(features.columns) else features


class LightGBMContributions:
    """Exact TreeSHAP contributions of a LightGBM model, tree by tree on distinct split patterns.

    Same numbers as LightGBM's `pred_contrib` (to ~1e-13; the tests check it), several times
    faster on many rows (experiments/predict-benchmark.md), by two observations:

    - A tree's contributions for a customer depend only on which side of each of that tree's
      splits the customer falls. Customers with the same pattern get the same contributions,
      so each tree is evaluated once per distinct pattern (about 1 in 20 of 250,000 rows).
    - TreeSHAP is a sum over the tree's leaves. A leaf's share depends only on the leaf's path:
      per distinct feature on it, the fraction of training rows the path keeps (`z`) and
      whether the customer satisfies the path's conditions on it (`o`, 0 or 1). With o in
      {0, 1} the Shapley sum is a polynomial product (below, `_leaf_shares`), and it is cached
      per leaf and 0/1 mask: patterns that differ elsewhere in the tree share it.

    Features are binned once on every threshold of the model (`x <= t` goes left, as in
    LightGBM), and the work per tree runs in compiled code (numba, which SHAP already
    requires) shared out over `n_jobs` threads. Models with categorical splits, zero-as-missing
    or linear leaves take the plain `pred_contrib` call, and so do rows with missing values
    and batches of fewer than `min_rows` rows.
    """

    min_rows = 200  # below this, the plain call costs less than the set-up

    def __init__(self, estimator):
        self.booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator
        model = self.booster.dump_model()
        self.n_features = self.booster.num_feature()
        trees = [tree["tree_structure"] for tree in model["tree_info"]]
        thresholds: dict[int, set] = {}
        simple = model.get("num_tree_per_iteration", 1) == 1
        for node in _nodes(trees):
            if "split_feature" in node:
                simple &= node["decision_type"] == "<=" and node["missing_type"] in ("None", "NaN")
                thresholds.setdefault(node["split_feature"], set()).add(node["threshold"])
            simple &= "leaf_coeff" not in node  # linear leaves: not a constant per leaf
        self.by_pattern = simple
        # Bin b of feature f holds the values in (cuts[b-1], cuts[b]]: `x <= cuts[k]` is `b <= k`.
        self.cuts = {f: np.array(sorted(t)) for f, t in sorted(thresholds.items())}
        self.trees = [_flat_tree(tree, self.cuts) for tree in trees] if simple else []
        self.by_pattern &= all(tree is not None for tree in self.trees)  # pattern ids overflow
        depth = max((int(np.diff(t["starts"]).max()) for t in self.trees if len(t["values"])),
                    default=1)
        self.by_pattern &= depth < 63  # a path's 0/1 mask is one 64-bit integer
        # Shapley weights k! (d - 1 - k)! / d! of a subset of size k among d path features.
        self.weights = np.zeros((depth + 1, depth + 1))
        for d in range(1, depth + 1):
            for k in range(d):
                self.weights[d, k] = math.factorial(k) * math.factorial(d - 1 - k) / math.factorial(d)

    def bins(self, X: np.ndarray) -> np.ndarray:
        """Each value's bin among its feature's thresholds (rows x features; 0 where unused)."""
        dtype = np.uint16 if max((len(c) for c in self.cuts.values()), default=0) < 2**16 else np.int32
        out = np.zeros(X.shape, dtype=dtype)
        for f, cuts in self.cuts.items():
            out[:, f] = np.searchsorted(cuts, X[:, f], side="left")
        return out

    def __call__(self, X: np.ndarray, n_jobs: int) -> np.ndarray:
        missing = np.isnan(X).any(axis=1)
        if not self.by_pattern or len(X) < self.min_rows or missing.all():
            return _lightgbm_native(self.booster)(X, n_jobs)
        if missing.any():  # LightGBM's own default directions for these few rows
            out = np.empty(X.shape)
            out[missing] = self(X[missing], n_jobs)
            out[~missing] = self(X[~missing], n_jobs)
            return out
        from gymchurn.churn import _treeshap  # numba: imported and compiled (cached) on first use

        bins = self.bins(X)
        n_jobs = max(1, min(n_jobs, len(self.trees)))

        def share(k: int) -> np.ndarray:  # one accumulator per thread, trees k, k + n_jobs, ...
            out = np.zeros((len(X), self.n_features))
            for tree in self.trees[k::n_jobs]:
                _treeshap.add_tree(out, bins, self.weights, **tree)
            return out

        with ThreadPoolExecutor(n_jobs) as pool:  # the compiled code releases the GIL
            return sum(pool.map(share, range(n_jobs)))


def _nodes(trees: list[dict]):
    stack = list(trees)
    while stack:
        node = stack.pop()
        yield node
        if "split_feature" in node:
            stack += [node["left_child"], node["right_child"]]


def _flat_tree(root: dict, cuts: dict[int, np.ndarray]) -> dict | None:
    """One tree as flat arrays: its leaves' paths (per distinct feature: zero fraction and the
    bin range the path allows) and how to number its split patterns; None if the pattern
    numbers could overflow 64 bits (a tree with very many splits: take the plain call)."""
    starts, values, features, zero_fraction, lo, hi = [0], [], [], [], [], []

    def walk(node: dict, path: dict) -> None:
        if "split_feature" not in node:
            values.append(node["leaf_value"])
            for f, (z, low, high) in path.items():
                features.append(f), zero_fraction.append(z), lo.append(low), hi.append(high)
            starts.append(len(features))
            return
        f = node["split_feature"]
        k = int(np.searchsorted(cuts[f], node["threshold"]))
        for child, left in ((node["left_child"], True), (node["right_child"], False)):
            count = child["internal_count"] if "split_feature" in child else child["leaf_count"]
            # LightGBM's TreeSHAP: fraction = child count / node count, multiplied when a
            # feature repeats on the path.
            z, low, high = path.get(f, (1.0, 0, len(cuts[f])))
            z = z * (count / node["internal_count"])
            walk(child, {**path, f: (z, low, min(high, k)) if left else (z, max(low, k + 1), high)})

    walk(root, {})
    features = np.array(features, dtype=np.int64)
    lo, hi = np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64)
    # Pattern number: per feature of the tree, the interval between its own thresholds, in
    # mixed radix. `interval[offset[j] + bin]` is feature j's interval of a global bin.
    used = np.unique(features)
    interval, offset, radix = [], [], []
    for f in used:
        bounds = np.unique(np.r_[lo[features == f], hi[features == f] + 1])
        bounds = bounds[(bounds > 0) & (bounds <= len(cuts[f]))]
        offset.append(sum(len(i) for i in interval))
        interval.append(np.searchsorted(bounds, np.arange(len(cuts[f]) + 1), side="right"))
        radix.append(len(bounds) + 1)
    if math.prod(radix) >= 2**62:
        return None
    return {
        "starts": np.array(starts, dtype=np.int64), "values": np.array(values, dtype=np.float64),
        "position": np.searchsorted(used, features),  # a path feature's column among `used`
        "zero_fraction": np.array(zero_fraction, dtype=np.float64),
        "lo": lo, "hi": hi, "used": used.astype(np.int64),
        "interval": np.concatenate(interval or [np.zeros(0)]).astype(np.int64),
        "offset": np.array(offset, dtype=np.int64), "radix": np.array(radix, dtype=np.int64),
    }


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


def _lightgbm_native(estimator):
    """LightGBM's own pred_contrib (reasons.method=native, and the compiled kernel's fallback)."""
    booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator

    def contrib(X: np.ndarray, n_jobs: int) -> np.ndarray:
        return booster.predict(X, pred_contrib=True, num_threads=n_jobs)[:, :-1]  # drop bias
    return contrib


def contribution_method(estimator, method: str = "compiled"):
    """(name, function(X, n_jobs) -> contributions) of the exact method for this estimator.

    `method` chooses for LightGBM: "compiled" (the default: TreeSHAP per split pattern, the
    numbers of LightGBM's own pred_contrib, several times faster) or "native" (pred_contrib
    itself: the reference, and a fallback should the compiled kernel ever be unavailable).
    Other families have one exact method each, their library's own where it has one."""
    from gymchurn.churn import REASON_METHODS

    if method not in REASON_METHODS:
        raise GymchurnError(f"reasons.method={method} is not an option: use one of "
                            f"{list(REASON_METHODS)}.")
    module = type(estimator).__module__
    if module.startswith("lightgbm"):
        if method == "native":
            return "LightGBM pred_contrib", _lightgbm_native(estimator)
        return "TreeSHAP per tree pattern, compiled", LightGBMContributions(estimator)
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


def _plain_number(value: float) -> str:
    """A value as `_as_shown` rounds it, as people write it: 2, 0.0033, 0.77, 53, 236 (never
    2.4e+02 or 53.0)."""
    if float(value).is_integer():
        return str(int(value))
    return np.format_float_positional(value, trim="-")  # the shortest digits that read back


def _as_shown(values: np.ndarray) -> np.ndarray:
    """The values rounded for people: two significant digits below 10 (0.00327 -> 0.0033,
    0.774 -> 0.77), whole numbers from 10 on (52.7 -> 53, 236.4 -> 236: never a rounded-away
    unit of a customer's own record), so values that read the same are worded once. (A value
    within a rounding error of half-way may end in the neighbouring last digit.)"""
    size = np.abs(values)
    digits = np.where(size >= 10, 0, 1 - np.floor(np.log10(np.where(size > 0, size, 1))))
    scale = 10.0 ** digits
    with np.errstate(invalid="ignore"):
        return np.round(values * scale) / scale


def _top_features(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` largest contributions: (feature indices, whether each raises the risk)."""
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(contrib, top, axis=1) > 0


def reason_words(contrib: np.ndarray, values: pd.DataFrame, labels: Mapping[str, str] | None = None,
                 k: int = 3, negative_labels: Mapping[str, str] | None = None) -> list[np.ndarray]:
    """For each row, its `k` features that raise the churn risk most, in words: "<plain name> =
    <the customer's value>", e.g. "visits a week this month = 0.5". One object array per rank,
    None where a customer has fewer than `k` risk-raising features.

    `values`: the rows' features as the customer's own values (`reason_values`), columns in the
    order of `contrib`'s; `labels`: plain names (conf/data/gym.yaml `labels`), else the feature
    name; `negative_labels`: for a feature listed there, a negative value reads as that name
    and the value's size ("visits a week fewer than usual this month = -0.3" is "visits a week
    more than usual this month = 0.3"). Values are rounded for people (`_as_shown`). Each
    distinct (feature, shown value) is worded once and shared by every row that has it, so
    1,000,000 rows cost a few vectorised passes, not a million string formats per rank.
    """
    labels, negative_labels = labels or {}, negative_labels or {}
    names = [str(labels.get(column, column)) for column in values.columns]
    negative_names = [negative_labels.get(column) for column in values.columns]
    numbers = values.to_numpy(dtype=np.float64)
    k = min(k, contrib.shape[1])
    top, raises = _top_features(contrib, k)
    top_value = np.take_along_axis(numbers, top, axis=1)

    def words(feature: int, value: float) -> str:
        if value < 0 and negative_names[feature] is not None:
            return f"{negative_names[feature]} = {_plain_number(-value)}"
        return f"{names[feature]} = {_plain_number(value + 0.0)}"  # + 0.0: never "-0"

    out = []
    for rank in range(k):
        texts = np.full(len(contrib), None, dtype=object)
        for feature in np.unique(top[raises[:, rank], rank]):
            rows = np.flatnonzero(raises[:, rank] & (top[:, rank] == feature))
            distinct, which = np.unique(_as_shown(top_value[rows, rank]), return_inverse=True)
            worded = np.array([words(feature, v) for v in distinct], dtype=object)
            texts[rows] = worded[which.ravel()]
        out.append(texts)
    return out


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
