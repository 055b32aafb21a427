"""optuna-dashboard on the project's Optuna storage: `make dashboard` /
`python -m gymchurn.dashboard port=8090`.

Every churn and segmentation study lives in one storage (conf/tune/, conf/segment_tune/); the
dashboard shows their trials, Pareto fronts and parameter importances while they run. The
storage is opened by the project's own `open_storage`, so a URL that cannot be opened fails
with the same one-line message as an experiment, and credentials are masked when printed.
"""

from __future__ import annotations

from omegaconf import DictConfig

from gymchurn.config import hydra_main
from gymchurn.errors import GymchurnError, exit_on_user_error


def run(cfg: DictConfig, printer=print) -> None:
    import optuna
    from optuna_dashboard import run_server

    from gymchurn.redact import mask_credentials
    from gymchurn.tracking import sqlite_path
    from gymchurn.tuning import journal_path, open_storage

    db = sqlite_path(str(cfg.storage)) or journal_path(str(cfg.storage))
    if db is not None and not db.exists():  # opening it would create an empty file there
        raise GymchurnError(f"no Optuna storage at {db}: run `make experiment` or `make segment` "
                            "first, or set storage= to the storage your studies are in.")
    try:
        storage = open_storage(str(cfg.storage))
        studies = optuna.get_all_study_names(storage)
    except GymchurnError:
        raise  # already one message naming the fix (a missing database driver, ...)
    except Exception as err:  # SQLAlchemy or Optuna: any reason the storage cannot be read
        raise GymchurnError(mask_credentials(
            f"could not read the Optuna storage '{cfg.storage}': {' '.join(str(err).split())}. "
            "Set storage= to a SQLAlchemy URL such as sqlite:///path/optuna.db.")) from err
    printer(f"optuna-dashboard: {len(studies)} studies in {mask_credentials(str(cfg.storage))}")
    printer(f"open: http://{cfg.host}:{cfg.port}   (Ctrl-C stops it)")
    run_server(storage, host=str(cfg.host), port=int(cfg.port))


@hydra_main("dashboard")
@exit_on_user_error
# Not exit_on_interrupt: that defers a signal to the next safe point between work steps, and a
# server has none; Ctrl-C ends the server (Bottle returns) and SIGTERM stops it at once.
def main(cfg: DictConfig):
    run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
