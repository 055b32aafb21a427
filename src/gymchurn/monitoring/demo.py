"""SYNTHETIC demonstration months for `make monitor-demo` and the monitoring tests.

All are drawn by the project's generator (gymchurn.data.make_synthetic_customers), so a model
trained on `history` meets months that are, by construction:
- `like-training`: drawn the same way (another seed), outcomes included: nothing should fire;
- `shifted`: a realistic shift before outcomes are known: 60 % of the customers on 6- and
  12-month contracts moved to one-month contracts, and visits fell (30 % fewer this month,
  15 % fewer on average);
- `changed-relationship`: features drawn like training, but outcomes that follow another
  relationship, a competitor opening near the clubs: members who live or work nearby and have
  been members for a while leave far more, and the model's usual leavers stay more often.

    python -m gymchurn.monitoring.demo data/monitoring-demo     (writes the four CSV files)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gymchurn.data import make_synthetic_customers
from gymchurn.errors import GymchurnError, exit_on_user_error
from gymchurn.outputs import write_text

HISTORY_ROWS, MONTH_ROWS = 4000, 4000


def like_training(n: int = MONTH_ROWS, seed: int = 101) -> pd.DataFrame:
    return make_synthetic_customers(n, seed=seed)


def shifted(n: int = MONTH_ROWS, seed: int = 102, strength: float = 1.0) -> pd.DataFrame:
    """`strength` scales the shift (1: the demo's; benchmarks/monitoring_study.py tries less)."""
    df = make_synthetic_customers(n, seed=seed)
    rng = np.random.default_rng(seed)
    movers = (df["Contract_period"] > 1) & (rng.random(n) < 0.6 * strength)
    df.loc[movers, ["Contract_period", "Month_to_end_contract"]] = 1
    df["Avg_class_frequency_current_month"] *= 1 - 0.3 * strength
    df["Avg_class_frequency_total"] *= 1 - 0.15 * strength
    return df.drop(columns="Churn")  # before outcomes


def changed_relationship(n: int = MONTH_ROWS, seed: int = 103, strength: float = 1.0) -> pd.DataFrame:
    """Each customer's outcome follows the new relationship with probability `strength`, the
    old one (the generator's own draw) otherwise."""
    df = make_synthetic_customers(n, seed=seed)
    rng = np.random.default_rng(seed)
    settled_nearby = (df["Near_Location"] == 1) & (df["Lifetime"] >= 3)
    p = np.where(df["Churn"] == 1, 0.45, 0.08) + np.where(settled_nearby, 0.35, 0.0)
    new = (rng.random(n) < p).astype(int)
    df["Churn"] = np.where(rng.random(n) < strength, new, df["Churn"])
    return df


MONTHS = {"like-training": like_training, "shifted": shifted,
          "changed-relationship": changed_relationship}


MARKER = ".gymchurn-monitoring-demo"  # in the folder: the names of the files the demo wrote


def write_demo(folder: Path) -> list[Path]:
    """history.csv (to train the demo model on) and one CSV per demo month, in `folder`.

    A file already there is replaced only if it is the demo's own: listed in the folder's
    MARKER (written with them), or, for files written before the marker, holding exactly the
    bytes about to be written (the tables come from fixed seeds). Any other file of those
    names stops it before anything is written."""
    tables = {"history": make_synthetic_customers(HISTORY_ROWS, seed=100),
              **{name: make() for name, make in MONTHS.items()}}
    texts = {folder / f"{name}.csv": table.to_csv(index=False) for name, table in tables.items()}
    marker = folder / MARKER
    listed = set(marker.read_text(encoding="utf-8").split()) if marker.is_file() else set()
    foreign = [p for p, text in texts.items() if p.exists() and not (
        p.is_file() and (p.name in listed or p.read_bytes() == text.encode()))]
    if foreign:
        raise GymchurnError(
            f"{', '.join(map(str, foreign))}: not the months the demo generates, so nothing was "
            "written. Move them away, or give the demo another folder.")
    folder.mkdir(parents=True, exist_ok=True)
    write_text(marker, "\n".join(p.name for p in texts) + "\n")
    for path, text in texts.items():
        write_text(path, text)
    return list(texts)


@exit_on_user_error
def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise GymchurnError("usage: python -m gymchurn.monitoring.demo FOLDER")
    for written in write_demo(Path(argv[0])):
        print(f"wrote {written}")


if __name__ == "__main__":
    main(sys.argv[1:])
