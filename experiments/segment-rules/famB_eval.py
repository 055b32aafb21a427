"""Family (b) stage 2: silhouette + bootstrap stability (20 refits) for every stage-1
configuration meeting the cheap targets."""
import json, time, warnings; warnings.filterwarnings("ignore")
import numpy as np, pandas as pd
from threadpoolctl import threadpool_limits
from seglib import *
from treeclust import TreeSegmentation, depth

X, churn = load()
d = pd.read_csv("famB_stage1.csv")
ok = (d.max_conditions <= 3) & (d.min_groups >= 3) & (d.churn_min <= 0.05) & (d.churn_max >= 0.5) \
    & d.k.between(4, 6) & (d.min_share >= 0.05)
rows = []
with threadpool_limits(1):
    for _, r in d[ok].iterrows():
        cols = r.cols.split("+")
        build = lambda: TreeSegmentation(cols, r.binary, bool(r.log), r.method, int(r.k_req))
        t = time.perf_counter(); m = build().fit(X); fit_s = time.perf_counter() - t
        Z = m.scaler.transform(X)
        t = time.perf_counter(); sc = label_scores(X, churn, m.labels_, Z); sil_s = time.perf_counter() - t
        t = time.perf_counter(); ari, ari_sd = stability(build, X, m.labels_, 20); boot_s = time.perf_counter() - t
        rows.append(dict(method=r.method, cols=r.cols, binary=r.binary, log=r.log, k_req=r.k_req,
                         depth=depth(m.root), **sc, ari=ari, ari_sd=ari_sd, fit_s=fit_s, sil_s=sil_s, boot_s=boot_s))
        print(rows[-1], flush=True)
pd.DataFrame(rows).to_csv("famB_stage2.csv", index=False)
