"""Per-trial cost of the best family inside an Optuna study like `make segment`'s: each trial
fits k-means (n_init=50) on a named subset, fits the depth-3 rule tree, scores silhouette (exact,
4,000 rows), fidelity, distinct groups, churn spread; then 20-refit bootstrap for 3
candidates. Prints seconds per trial and the trials that fit in a 120 s budget."""
import time, warnings; warnings.filterwarnings("ignore")
import numpy as np, optuna
from threadpoolctl import threadpool_limits
from seglib import *
optuna.logging.set_verbosity(optuna.logging.WARNING)
X, churn = load()
SUBSETS = {"tenure_groups_friends": ["Lifetime", "Group_visits", "Promo_friends"],
           "tenure_partner_friends": ["Lifetime", "Partner", "Promo_friends"],
           "activity_partner_friends": ["Avg_class_frequency_current_month", "Partner", "Promo_friends"],
           "contract_tenure": ["Contract_period", "Lifetime"],
           "contract_tenure_age_partner": ["Contract_period", "Lifetime", "Age", "Partner"],
           "tenure_age_activity": ["Lifetime", "Age", "Avg_class_frequency_current_month"]}


def objective(trial):
    cols = SUBSETS[trial.suggest_categorical("subset", list(SUBSETS))]
    k = trial.suggest_int("k", 4, 6)
    log = trial.suggest_categorical("log", [False, True])
    m = ClusterModel(cols, "std", log, "kmeans", k, 42, n_init=50).fit(X)
    _, ri = fit_rule(X[cols], m.labels_, k)
    r = label_scores(X, churn, m.labels_, m.scaler.transform(X))
    trial.set_user_attr("fidelity", ri["fidelity"]); trial.set_user_attr("min_groups", r["min_groups"])
    return r["silhouette"], r["churn_max"] - r["churn_min"]


with threadpool_limits(1):
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=12))
    t = time.perf_counter(); study.optimize(objective, n_trials=40); trials_s = time.perf_counter() - t
    per = trials_s / 40
    cols = SUBSETS["tenure_groups_friends"]
    t = time.perf_counter()
    for _ in range(3):
        m = ClusterModel(cols, "std", True, "kmeans", 6, 42, n_init=50).fit(X)
        stability(lambda: ClusterModel(cols, "std", True, "kmeans", 6, 42, n_init=50), X, m.labels_, 20)
    boot3 = time.perf_counter() - t
print(f"per trial {per:.3f} s; 3 bootstrap candidates x 20 refits {boot3:.1f} s; "
      f"trials in 120 s minus bootstraps and ~30 s fixed overhead: {int((120 - boot3 - 30) / per)}")
