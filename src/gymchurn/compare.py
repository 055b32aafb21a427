"""`make compare`: run every model family on every feature set, then one leaderboard.

    python -m gymchurn.compare                      # all families x all feature sets
    python -m gymchurn.compare features=raw tune=fast
    python -m gymchurn.compare compare_models=[lgbm,xgb]

Arguments are the same Hydra overrides `make experiment` takes. The leaderboard is read back
from MLflow (best run per family and feature set on the same data), printed, and written to
experiments/churn-leaderboard.md; the best version of this comparison gets the `challenger`
alias.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pandas as pd
from hydra.errors import HydraException
from mlflow.tracking import MlflowClient
from omegaconf.errors import OmegaConfBaseException

from gymchurn.config import CONFIG_DIR, compose_config, resolve_path
from gymchurn.errors import GymchurnError, exit_on_user_error
from gymchurn.experiment import train
from gymchurn.tracking import setup_experiment

LEADERBOARD_PATH = "experiments/churn-leaderboard.md"
LEADERBOARD_COLUMNS = ["roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1", "log_loss",
                       "brier"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _split_overrides(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Separate `model=`/`features=` (which choose the grid) from the other overrides."""
    grid = {"model": options("model"), "features": options("features")}
    rest = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("model", "features", "compare_models", "compare_features"):
            group = "features" if "features" in key else "model"
            values = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
            unknown = sorted(set(values) - set(options(group)))
            if unknown:
                raise GymchurnError(
                    f"unknown {group} {unknown}. Choose from {options(group)} (conf/{group}/)."
                )
            grid[group] = values
        else:
            rest.append(arg)
    return rest, grid


def leaderboard(experiment_id: str, data_digest: str, metric: str) -> pd.DataFrame:
    """Best parent run per (family, feature set) on this data.

    Ranked by the out-of-fold CV metric of the training split, never by the holdout: choosing
    on the holdout would make its numbers optimistic. Holdout metrics are shown beside it.
    """
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.run_type = 'churn' and tags.data_digest = '{data_digest}' "
                      "and attributes.status = 'FINISHED'",
    )
    if runs.empty:
        return runs
    key = f"metrics.cv_{metric}"
    ascending = metric in ("log_loss", "brier")
    runs = runs.sort_values(key, ascending=ascending)
    best = runs.drop_duplicates(["tags.model_family", "tags.feature_set"])
    table = pd.DataFrame({
        "family": best["tags.model_family"], "features": best["tags.feature_set"],
        f"cv_{metric}": best[key],
        **{f"test_{m}": best[f"metrics.test_{m}"] for m in LEADERBOARD_COLUMNS},
        "rcv_roc_auc": best.get("metrics.rcv_roc_auc_mean"),
        "rcv_roc_auc_std": best.get("metrics.rcv_roc_auc_std"),
        "threshold": best["metrics.threshold"],
        "run_id": best["run_id"],
    })
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    table = table.fillna("–")
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([f"## {title}", "", header, rule, *body, ""])


def compare(argv: list[str], output: Path | None = None) -> pd.DataFrame:
    overrides, grid = _split_overrides(argv)
    results = []
    for features in grid["features"]:
        for family in grid["model"]:
            try:
                cfg = compose_config(overrides=[*overrides, f"model={family}",
                                                f"features={features}"])
            except (HydraException, OmegaConfBaseException) as err:
                raise GymchurnError(f"bad override: {err}") from err
            print(f"\n### {family} / {features}", flush=True)
            results.append((cfg, train(cfg)))
    cfg, last = results[-1]
    metric = cfg.tune.metric
    experiment_id = setup_experiment(cfg.tracking)
    digest = mlflow.get_run(last["run_id"]).data.tags["data_digest"]
    table = leaderboard(experiment_id, digest, metric)

    ascending = metric in ("log_loss", "brier")
    best_cfg, best = sorted(results, key=lambda r: r[1]["cv_metrics"][metric],
                            reverse=not ascending)[0]
    if best["model_version"] and best_cfg.registry.alias:
        MlflowClient().set_registered_model_alias(
            best_cfg.registry.model_name, best_cfg.registry.alias, best["model_version"]
        )
    out = Path(output) if output else resolve_path(LEADERBOARD_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "<!-- generated by `make compare`; do not edit by hand -->\n"
        + to_markdown(table, f"Best run per family and feature set (ranked by out-of-fold cv_{metric}; "
                              f"test_* on the holdout; data {digest[:12]})")
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.4f}".format):
        print("\n" + table.drop(columns=["run_id"]).to_string(index=False))
    print(f"\nbest of this comparison by out-of-fold cv_{metric}: "
          f"{best_cfg.model.name}/{best_cfg.features.name} "
          f"(version {best['model_version']}, alias @{best_cfg.registry.alias})")
    print(f"leaderboard written to {out}")
    return table


@exit_on_user_error
def main() -> None:
    compare(sys.argv[1:])


if __name__ == "__main__":
    main()
