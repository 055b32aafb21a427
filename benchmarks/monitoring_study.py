"""How often `make monitor`'s verdict is wrong on SYNTHETIC months of known kind, by month size:
false alarms on months drawn like the model's training data, and detection of the shifted and
changed-relationship months (gymchurn/monitoring/demo.py). Prints Markdown tables.

    python benchmarks/monitoring_study.py --store mlruns/demo --version 1 --months 20

The model is a registered version with reference statistics trained on the demo history (as
`make monitor-demo` registers it); each month is judged by the monitoring core
(gymchurn.monitoring.month.judge_month, conf/monitor.yaml's settings), without MLflow or a report.
"""

from __future__ import annotations

import argparse
import collections
import time

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
from omegaconf import OmegaConf

from gymchurn.config import compose_config, resolve_path
from gymchurn.monitoring import demo
from gymchurn.monitoring.month import judge_month
from gymchurn.registry import load_churn_model


def half_leave(n: int, seed: int):
    """Customers drawn like training, half of them leavers (about a quarter in training): more
    leave, the model is as good. A month the outcome rules must not call a decay."""
    pool = demo.like_training(4 * n, seed)
    leavers, stayers = pool[pool["Churn"] == 1], pool[pool["Churn"] == 0]
    month = pd.concat([leavers.sample(n // 2, random_state=seed),
                       stayers.sample(n - n // 2, random_state=seed)])
    return month.sample(frac=1, random_state=seed).reset_index(drop=True)


KINDS = {"like-training": demo.like_training,
         "like-training, half leave": half_leave,
         "shifted": demo.shifted,
         "shifted, strength 0.3": lambda n, seed: demo.shifted(n, seed, strength=0.3),
         "changed-relationship": demo.changed_relationship,
         "changed-relationship, strength 0.3":
             lambda n, seed: demo.changed_relationship(n, seed, strength=0.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="mlruns/demo", help="folder holding mlflow.db")
    parser.add_argument("--version", default="1")
    parser.add_argument("--months", type=int, default=20, help="months per kind and size")
    parser.add_argument("--sizes", default="200,1000,4000,20000")
    args = parser.parse_args()
    mlflow.set_tracking_uri(f"sqlite:///{resolve_path(args.store)}/mlflow.db")
    model = load_churn_model("gym-churn-classifier", args.version)
    cfg = compose_config("monitor", ["input=unused.csv", "segmentation.enabled=false"])
    settings = OmegaConf.to_container(cfg, resolve=True)
    reference = model.settings["reference"]
    started = time.monotonic()
    print(f"model: gym-churn-classifier version {args.version} of {args.store}; "
          f"{args.months} months per kind and size; conf/monitor.yaml as committed\n")
    print("| month | customers | ok | watch | retrain | rules that fired (months) |")
    print("|---|---|---|---|---|---|")
    for kind, make in KINDS.items():
        for n in (int(s) for s in args.sizes.split(",")):
            verdicts, rules = collections.Counter(), collections.Counter()
            for i in range(args.months):
                month = make(n, seed=1000 * n + i)
                churn = month.pop("Churn") if "Churn" in month else None
                result = judge_month(f"{kind}-{i}", model.pipeline, reference, month, churn,
                                     settings, settings["risk_bands"])
                plt.close("all")  # the core draws the report's figures; none is kept here
                verdicts[result.verdict] += 1
                rules.update({f.rule for f in result.findings})
            fired = ", ".join(f"{r} {c}" for r, c in rules.most_common()) or "none"
            print(f"| {kind} | {n:,} | {verdicts['ok']} | {verdicts['watch']} | "
                  f"{verdicts['retrain']} | {fired} |", flush=True)
    print(f"\n{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
