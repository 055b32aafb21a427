"""Seed sensitivity of a family (a) configuration: k-means random_state 0..9."""
import sys, warnings; warnings.filterwarnings("ignore")
import numpy as np
from threadpoolctl import threadpool_limits
from sklearn.metrics import adjusted_rand_score
from seglib import *
X, churn = load()
cols, binary, log, k = sys.argv[1].split("+"), sys.argv[2], sys.argv[3] == "True", int(sys.argv[4])
ref = None
with threadpool_limits(1):
    for seed in range(10):
        m = ClusterModel(cols, binary, log, "kmeans", k, seed).fit(X)
        _, ri = fit_rule(X[cols], m.labels_, k)
        r = label_scores(X, churn, ri["rule_labels"], sil=False)
        ref = ri["rule_labels"] if ref is None else ref
        print(seed, "fid", round(ri["fidelity"], 3), "cond", ri["max_conditions"], "ARI vs seed0", round(adjusted_rand_score(ref, ri["rule_labels"]), 3),
              {a: round(float(b), 3) for a, b in r.items()})
