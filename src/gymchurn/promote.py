"""Promotion gate: `make promote` / `make rollback` / `python -m gymchurn.promote`.

compose config -> open the registry -> gymchurn.lifecycle.promotion (under the model's lock:
gate, compare, decide, record the decision, move the aliases) -> the decision in one line.
See conf/promote.yaml.
"""

from __future__ import annotations

from omegaconf import DictConfig

from gymchurn.config import hydra_main
from gymchurn.errors import GymchurnError, exit_on_interrupt, exit_on_user_error


def run(cfg: DictConfig, printer=print) -> dict:
    """Run the gate (or a forced promotion, or a rollback); return the decision and aliases."""
    if cfg.action not in ("promote", "rollback"):
        raise GymchurnError(f"action={cfg.action} is not an option: use promote or rollback.")
    from gymchurn.lifecycle import promotion
    from gymchurn.registry import open_registry

    open_registry(cfg.tracking, writable=True)  # aliases, tags and a decision run
    return (promotion.promote if cfg.action == "promote" else promotion.rollback)(cfg, printer)


@hydra_main("promote")
@exit_on_user_error
@exit_on_interrupt  # SIGTERM too: the model's lock is released, the decision run marked KILLED
def main(cfg: DictConfig) -> None:
    run(cfg, printer=lambda line: print(line, flush=True))


if __name__ == "__main__":
    main()
