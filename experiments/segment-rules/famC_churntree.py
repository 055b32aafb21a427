"""Family (c) reference: supervised segmentation = CART on Churn (depth <= 3, k leaves, leaves
>= 5 %), segment = leaf. Uses churn to define segments (the repo forbids that for its
clustering); shown only as the upper bound on churn spread under the same rule format."""
import warnings; warnings.filterwarnings("ignore")
import numpy as np
from sklearn.tree import DecisionTreeClassifier
from sklearn.metrics import adjusted_rand_score
from seglib import *
X, churn = load()
candidates = {"all13": COLUMNS,
              "no_contract": [c for c in COLUMNS if c not in CONTRACT],
              "behaviour": ["Lifetime", "Age", "Avg_class_frequency_current_month", "Avg_additional_charges_total",
                            "Group_visits", "Partner", "Promo_friends", "Near_Location", "Contract_period"]}
for name, cols in candidates.items():
    for k in (4, 5, 6):
        build = lambda: DecisionTreeClassifier(max_depth=3, max_leaf_nodes=k, min_samples_leaf=200, random_state=0)
        t = build().fit(X[cols], churn)
        leaf = t.apply(X[cols])
        r = label_scores(X, churn, leaf, sil=False)
        rng = np.random.default_rng(42); aris = []
        for _ in range(20):
            rows = rng.integers(0, len(X), len(X))
            aris.append(adjusted_rand_score(leaf, build().fit(X[cols].iloc[rows], churn[rows]).apply(X[cols])))
        paths = tree_paths(t, cols)
        print(name, k, {a: round(float(b), 3) for a, b in r.items()}, "ARI", round(np.mean(aris), 3))
        for n, p in paths.items():
            m = leaf == n
            print("    ", round(m.mean(), 3), round(churn[m].mean(), 3), fmt_rule(simplify(p)))
