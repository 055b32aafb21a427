"""Family (a) stage 1: k-means on every subset of the candidate columns (no |r|>0.9 pair),
k=4..6, binaries standardised or 0/1; rule = depth-3 CART on the clustering inputs with k, k+1,
k+2 leaves (extra leaves merged by majority cluster). Cheap scores only (no silhouette, no
bootstrap); the later stage adds those for the best configurations."""
import itertools, sys, time
import numpy as np, pandas as pd
from threadpoolctl import threadpool_limits
from seglib import *

X, churn = load()
slots = ["Contract_period", "Lifetime", "Age", "Avg_class_frequency_current_month",
         "Avg_additional_charges_total", "Group_visits", "Partner", "Promo_friends",
         "Near_Location"]
algo = sys.argv[1] if len(sys.argv) > 1 else "kmeans"
KW = dict(x.split("=") for x in sys.argv[3:])
TAG = "_".join([algo] + sys.argv[3:])
rows = []
t0 = time.time()
with threadpool_limits(1):
    sizes = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else (2, 3, 4, 5)
    for size in sizes:
        for cols in itertools.combinations(slots, size):
            scalings = ["std", "bin01"] if any(c in BINARY for c in cols) else ["std"]
            for binary in scalings:
                for log in (False, True):
                    if log and not any(c in SKEWED for c in cols):
                        continue
                    for k in (4, 5, 6):
                        tt = time.perf_counter()
                        m = ClusterModel(cols, binary, log, algo, k, 42, **KW).fit(X)
                        fit_s = time.perf_counter() - tt
                        lab = m.labels_
                        base = label_scores(X, churn, lab, sil=False)
                        for extra in (0, 1, 2):
                            _, ri = fit_rule(X[list(cols)], lab, k + extra)
                            rr = label_scores(X, churn, ri["rule_labels"], sil=False)
                            rows.append(dict(cols="+".join(cols), n_cols=size, binary=binary,
                                             log=log, k_req=k, extra=extra, fit_s=fit_s,
                                             fidelity=ri["fidelity"],
                                             max_conditions=ri["max_conditions"],
                                             **base,
                                             **{"rule_" + a: b for a, b in rr.items()}))
    print("done", time.time() - t0)
df = pd.DataFrame(rows)
df.to_csv(f"famA_{TAG}_stage1.csv", index=False)
