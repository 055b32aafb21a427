"""Full scores of one configuration: silhouette, fidelity, distinct columns, churn, shares,
bootstrap stability (clusters and rules), fit timing, per-segment rules.
usage: detail.py FAMILY COLS BINARY LOG K [EXTRA|METHOD] [ALGO] [ALGO_KW=V]"""
import sys, time, json, warnings; warnings.filterwarnings("ignore")
import numpy as np
from threadpoolctl import threadpool_limits
from seglib import *
from treeclust import TreeSegmentation, depth

X, churn = load()


class RuleModel:
    """cluster -> CART (depth 3, k+extra leaves) on the raw clustering inputs; predicts rules."""

    def __init__(self, cols, binary, log, algo, k, extra, seed=42, **kw):
        self.cols, self.k, self.extra = list(cols), k, extra
        self.cm = ClusterModel(cols, binary, log, algo, k, seed, **kw)

    def fit(self, X):
        self.cm.fit(X)
        self.tree, self.info = fit_rule(X[self.cols], self.cm.labels_, self.k + self.extra)
        return self

    def predict(self, X):
        t = self.tree
        pred = t.classes_[t.tree_.value[:, 0, :].argmax(1)]
        return pred[t.apply(X[self.cols].to_numpy(dtype=float))]


def report(family, cols, binary, log, k, arg, algo="kmeans", n_boot=20, **kw):
    cols = cols.split("+")
    out = dict(family=family, cols=cols, binary=binary, log=log, k=k, arg=arg, algo=algo, kw=kw)
    with threadpool_limits(1):
        t = time.perf_counter()
        if family == "a":
            m = RuleModel(cols, binary, log, algo, k, int(arg), **kw).fit(X)
            out["fit_s"] = time.perf_counter() - t
            labels, info = m.cm.labels_, m.info
            Z = m.cm.scaler.transform(X)
            out["fidelity"], out["max_conditions"] = info["fidelity"], info["max_conditions"]
            rule_labels = info["rule_labels"]
            t = time.perf_counter()
            out["ari_clusters"] = stability(lambda: ClusterModel(cols, binary, log, algo, k, 42, **kw), X, labels, n_boot)
            out["ari_rules"] = stability(lambda: RuleModel(cols, binary, log, algo, k, int(arg), **kw), X, rule_labels, n_boot)
            out["boot_s_both"] = time.perf_counter() - t
            rules = {c: (v["conditions"], v["rule"], round(v["precision"], 3), round(v["recall"], 3)) for c, v in info["per"].items()}
        else:
            m = TreeSegmentation(cols, binary, log, arg, k).fit(X)
            out["fit_s"] = time.perf_counter() - t
            labels = rule_labels = m.labels_
            Z = m.scaler.transform(X)
            out["fidelity"], out["max_conditions"] = 1.0, depth(m.root)
            t = time.perf_counter()
            out["ari_rules"] = stability(lambda: TreeSegmentation(cols, binary, log, arg, k), X, labels, n_boot)
            out["boot_s"] = time.perf_counter() - t
            rules = {c: (n, txt, 1.0, 1.0) for c, (n, txt) in m.rules().items()}
        t = time.perf_counter()
        out["clusters"] = {a: float(b) for a, b in label_scores(X, churn, labels, Z).items()}
        out["sil_s"] = time.perf_counter() - t
        out["rules_as_segments"] = {a: float(b) for a, b in label_scores(X, churn, rule_labels, Z).items()}
    diffs = std_diffs(X, rule_labels)
    dg = distinct_groups(diffs)
    segs = []
    for s in sorted(np.unique(rule_labels), key=lambda s: -churn[rule_labels == s].mean()):
        inside = rule_labels == s
        top = diffs.loc[int(s)][[c for c in dg[int(s)][2]]].round(2).to_dict()
        segs.append(dict(segment=int(s), share=round(inside.mean(), 3), churn=round(churn[inside].mean(), 3),
                         conditions=rules[int(s)][0], rule=rules[int(s)][1], precision=rules[int(s)][2],
                         recall=rules[int(s)][3], groups=dg[int(s)][0], distinct=top))
    out["segments"] = segs
    return out


if __name__ == "__main__":
    a = sys.argv[1:]
    kw = dict(x.split("=") for x in a[7:])
    res = report(a[0], a[1], a[2], a[3] == "True", int(a[4]), a[5], a[6] if len(a) > 6 else "kmeans", **kw)
    def conv(o):
        return float(o) if isinstance(o, (np.floating, np.integer)) else str(o)
    print(json.dumps(res, indent=1, default=conv))
