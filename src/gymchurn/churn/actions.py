"""Retention measures (conf/measures/): who each is for, and each customer's suggested action.

One catalogue, in priority order, serves `make predict` (a customer's suggested action is the
first measure whose `for` condition holds) and the report (a target group's measures, what the
data shows for them within comparable customers, a pilot design). Conditions are pandas
expressions over the raw columns, so a CRM filter and this code read the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gymchurn.errors import GymchurnError

WHERE = "conf/measures/"


@dataclass(frozen=True)
class Measure:
    name: str
    when: str                  # `for` in the YAML: who the measure is for
    action: str                # what the department does, in words
    exposure: str | None       # the behaviour it aims at (null: no comparison in the data)
    exposure_says: str | None  # that behaviour in words
    strata: dict = field(default_factory=dict)  # column -> None (each value) or band edges
    driver: str | None = None  # the column behind the measure
    new_each_month: str | None = None  # who of them is new this month (a pilot's monthly
                                       # intake); None: as many each month as are eligible now


@dataclass(frozen=True)
class Catalogue:
    items: tuple[Measure, ...]
    default_action: str


def load_catalogue(cfg: Mapping) -> Catalogue:
    """The measures from their config (a plain mapping), or one error naming what is wrong."""
    items = cfg.get("items") if isinstance(cfg, Mapping) else None
    if not items or not isinstance(cfg.get("default_action"), str):
        raise GymchurnError(f"the measures catalogue ({WHERE}) needs `default_action` (text) and "
                            "`items` (a list of measures with name, for, action).")
    measures, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) and item.get(k)
                                                     for k in ("name", "for", "action")):
            raise GymchurnError(f"measure #{i + 1} in {WHERE} needs text `name`, `for` and "
                                f"`action`; got {dict(item) if isinstance(item, Mapping) else item!r}.")
        if item["name"] in seen:
            raise GymchurnError(f"measure '{item['name']}' appears twice in {WHERE}; names are unique.")
        seen.add(item["name"])
        strata = dict(item.get("strata") or {})
        for column, edges in strata.items():
            if edges is not None and (not isinstance(edges, list | tuple) or len(edges) < 2 or any(
                    not isinstance(e, int | float) for e in edges) or list(edges) != sorted(set(edges))):
                raise GymchurnError(f"measure '{item['name']}': strata.{column} must be null (each "
                                    f"value) or increasing band edges such as [0, 1, 3, 6]; got {edges!r}.")
        measures.append(Measure(item["name"], item["for"], item["action"], item.get("exposure"),
                                item.get("exposure_says"), strata, item.get("driver"),
                                item.get("new_each_month")))
    return Catalogue(tuple(measures), cfg["default_action"])


def condition_mask(customers: pd.DataFrame, expression: str, what: str,
                   where: str = WHERE) -> pd.Series:
    """The customers an expression (pandas eval over the columns) selects, as a boolean Series,
    or one error naming the expression and `where` it is set."""
    try:
        mask = customers.eval(expression)
    except Exception as err:  # pandas raises many kinds for a bad expression
        raise GymchurnError(f"{what} '{expression}' cannot be evaluated on the customer table "
                            f"({err}). Fix it in {where}: use column names, numbers and "
                            "comparisons.") from None
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise GymchurnError(f"{what} '{expression}' is not a yes/no condition; fix it in {where}.")
    return mask


def check_catalogue(catalogue: Catalogue, customers: pd.DataFrame) -> None:
    """Every condition and stratum of the catalogue works on these columns (before any work)."""
    for m in catalogue.items:
        condition_mask(customers, m.when, f"measure '{m.name}': for")
        if m.exposure:
            condition_mask(customers, m.exposure, f"measure '{m.name}': exposure")
        if m.new_each_month:
            condition_mask(customers, m.new_each_month, f"measure '{m.name}': new_each_month")
        missing = [c for c in m.strata if c not in customers.columns]
        if missing:
            raise GymchurnError(f"measure '{m.name}': strata {missing} are not columns of the "
                                f"customer table; fix {WHERE}.")


def suggested_actions(customers: pd.DataFrame, catalogue: Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """(measure name, action) per customer: the first measure whose `for` holds, else the
    default action (measure name "default")."""
    names = np.full(len(customers), "default", dtype=object)
    actions = np.full(len(customers), catalogue.default_action, dtype=object)
    open_ = np.ones(len(customers), dtype=bool)
    for m in catalogue.items:
        hit = open_ & condition_mask(customers, m.when, f"measure '{m.name}': for").to_numpy()
        names[hit], actions[hit] = m.name, m.action
        open_ &= ~hit
    return names, actions
