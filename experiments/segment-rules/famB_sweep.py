"""Family (b) stage 1: tree-defined clusters (segment = leaf, fidelity 1) on every candidate
subset: IMM from k-means centres and the greedy SSE threshold tree (depth <= 3, leaves >= 5 %).
Cheap scores only; IMM trees deeper than 3 are kept but flagged (max_conditions)."""
import itertools, sys, time, warnings
import numpy as np, pandas as pd
from threadpoolctl import threadpool_limits
from seglib import *
from treeclust import TreeSegmentation, depth

warnings.filterwarnings("ignore")
X, churn = load()
slots = ["Contract_period", "Lifetime", "Age", "Avg_class_frequency_current_month",
         "Avg_additional_charges_total", "Group_visits", "Partner", "Promo_friends",
         "Near_Location"]
rows = []
t0 = time.time()
with threadpool_limits(1):
    for size in (2, 3, 4, 5):
        for cols in itertools.combinations(slots, size):
            scalings = ["std", "bin01"] if any(c in BINARY for c in cols) else ["std"]
            for binary in scalings:
                for log in (False, True):
                    if log and not any(c in SKEWED for c in cols):
                        continue
                    for method in ("imm", "greedy"):
                        for k in (4, 5, 6):
                            tt = time.perf_counter()
                            m = TreeSegmentation(cols, binary, log, method, k).fit(X)
                            fit_s = time.perf_counter() - tt
                            r = label_scores(X, churn, m.labels_, sil=False)
                            rows.append(dict(cols="+".join(cols), n_cols=size, binary=binary,
                                             log=log, method=method, k_req=k, fit_s=fit_s,
                                             max_conditions=depth(m.root), **r))
    print("done", time.time() - t0, flush=True)
pd.DataFrame(rows).to_csv("famB_stage1.csv", index=False)
