"""What a retention call costs and a kept member is worth: the stated assumptions of
conf/economics/ shared by the report (campaign value) and the churn threshold (rule=cost).

A call costs `offer_cost`; a leaver the measure keeps brings `monthly_fee` x `months_kept`; the
share of called leavers a measure keeps is unknown before a pilot, so it is a low / mid / high
scenario, and the middle one decides the threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gymchurn.errors import GymchurnError


@dataclass(frozen=True)
class Assumptions:
    offer_cost: float      # per customer called (the offer, the call)
    monthly_fee: float     # what a kept member pays per month
    months_kept: float     # how long a kept member stays, on average
    keep_rates: dict       # scenario -> share of the called leavers the measure keeps
    currency: str = ""     # shown before money figures

    @classmethod
    def from_config(cls, cfg: Mapping) -> Assumptions:
        try:
            made = cls(float(cfg["offer_cost"]), float(cfg["monthly_fee"]),
                       float(cfg["months_kept"]),
                       {str(k): float(v) for k, v in dict(cfg["keep_rates"]).items()},
                       str(cfg.get("currency") or ""))
        except (KeyError, TypeError, ValueError) as err:
            raise GymchurnError(f"economics (conf/economics/default.yaml) needs numbers offer_cost, "
                                f"monthly_fee, months_kept and keep_rates {{low: .., mid: .., "
                                f"high: ..}}: {err}.") from None
        if min(made.offer_cost, made.monthly_fee, made.months_kept) < 0 or not made.keep_rates \
                or not all(0 <= r <= 1 for r in made.keep_rates.values()):
            raise GymchurnError("economics (conf/economics/default.yaml): costs, fee and months "
                                f"must be at least 0, and every keep rate between 0 and 1; got {made}.")
        return made

    @property
    def value_kept(self) -> float:
        """What one kept member brings in."""
        return self.monthly_fee * self.months_kept

    @property
    def middle(self) -> str:
        """The middle keep-rate scenario (the one decisions use)."""
        names = list(self.keep_rates)
        return names[len(names) // 2]

    def break_even_probability(self, scenario: str | None = None) -> float:
        """The churn probability from which calling a customer pays: p x keep x value = cost."""
        kept = self.keep_rates[scenario or self.middle] * self.value_kept
        return self.offer_cost / kept if kept else float("inf")

    def cost_ratio(self, scenario: str | None = None) -> float:
        """What a missed leaver costs in wasted offers, for `choose_threshold(rule="cost")`.

        Flagging n customers of whom l leave nets keep x value x l - cost x n; maximising it is
        minimising ratio x missed + false alarms with ratio = keep x value / cost - 1.
        """
        name = scenario or self.middle
        if self.offer_cost <= 0:
            raise GymchurnError("threshold.rule=cost needs economics.offer_cost above 0 (a free "
                                "call makes every customer worth calling).")
        ratio = self.keep_rates[name] * self.value_kept / self.offer_cost - 1
        if ratio <= 0:
            raise GymchurnError(
                f"threshold.rule=cost: in the {name} scenario calling never pays (a kept member "
                f"brings {self.keep_rates[name] * self.value_kept:,.2f} per leaver called, an "
                f"offer costs {self.offer_cost:,.2f}); change conf/economics/ or use rule=f1.")
        return ratio

    def money(self, x: float, people: bool = False) -> str:
        return money(x, self.currency, people)


def money(x: float, currency: str = "", people: bool = False) -> str:
    """"$1,813", or with `people` rounded to two significant digits ("$1,800")."""
    shown = about(abs(x)) if people else f"{abs(x):,.0f}"
    return f"{'-' if round(x) < 0 else ''}{currency}{shown}"


def about(x: float) -> str:
    """A figure rounded for people: two significant digits from 100 on (1,813 -> 1,800)."""
    import math

    if abs(x) < 100:
        return f"{x:,.0f}"
    digits = int(math.floor(math.log10(abs(x)))) - 1
    return f"{round(x, -digits):,.0f}"


def share_up(x: float) -> str:
    """A share that is a threshold to reach, as a whole percentage rounded up, so that reaching
    the shown figure is always enough (0.125 -> "13%", never "12%")."""
    import math

    return f"{math.ceil(round(100 * x, 9)):.0f}%"
