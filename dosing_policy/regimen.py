"""Regimens a ward can actually give, and the practical search space of candidates.

A :class:`Regimen` is an intermittent infusion schedule relative to the decision time: an
optional loading dose, then ``amount`` mg every ``interval`` h, each infused over
``duration`` h (``duration`` 0 = bolus). A :class:`RegimenSpace` lists the practical ones:
doses rounded to the strength that is stocked, allowed intervals, a maximum single and daily
dose and a maximum infusion rate (which sets the shortest allowed infusion for each dose).

Vancomycin defaults (:data:`VANCOMYCIN_SPACE`): 250 mg steps, q8h / q12h / q24h, single doses
up to 3000 mg and loading doses of 20-35 mg/kg capped at 3000 mg (Rybak MJ et al., Am J
Health Syst Pharm 2020;77:835-864, ASHP/IDSA/PIDS/SIDP consensus), infused at no more than
10 mg/min (600 mg/h) and over at least 60 min (US prescribing information for vancomycin
injection), durations in 30 min steps, and at most 4500 mg a day (:data:`VANCOMYCIN_MAX_DAILY_MG`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from assimilation import Dose

__all__ = ["Regimen", "RegimenSpace", "candidate_regimens", "VANCOMYCIN_SPACE", "VANCOMYCIN_MAX_DAILY_MG", "vancomycin_loading_doses"]


class Regimen(NamedTuple):
    """Doses from the decision time on (times relative to it, in h; amounts in mg).

    The first dose is given at ``start``; it is a loading dose of ``loading_amount`` mg over
    ``loading_duration`` h when ``loading_amount > 0``, otherwise a maintenance dose.
    """

    amount: float
    interval: float
    duration: float = 1.0
    start: float = 0.0
    loading_amount: float = 0.0
    loading_duration: float = 0.0

    @property
    def first_amount(self) -> float:
        return self.loading_amount if self.loading_amount > 0 else self.amount

    @property
    def first_duration(self) -> float:
        if self.loading_amount > 0 and self.loading_duration > 0:
            return self.loading_duration
        return self.duration

    @property
    def daily_dose(self) -> float:
        """Maintenance mg per 24 h."""
        return self.amount * 24.0 / self.interval

    def dose_offsets(self, horizon: float) -> list[float]:
        """Times (h after the decision) of the doses that start before ``horizon``."""
        n = max(0, math.ceil((horizon - self.start) / self.interval - 1e-9))
        return [self.start + k * self.interval for k in range(n)]

    def doses(self, now: float, horizon: float, compartment: int | str = 0) -> list[Dose]:
        """The regimen as absolute :class:`assimilation.Dose` records in [now, now + horizon)."""
        out = []
        for k, offset in enumerate(self.dose_offsets(horizon)):
            amount, duration = (self.first_amount, self.first_duration) if k == 0 else (self.amount, self.duration)
            out.append(Dose(now + offset, amount, compartment, duration))
        return out

    def describe(self) -> str:
        text = f"{self.amount:g} mg q{self.interval:g}h" + (f" over {self.duration:g} h" if self.duration > 0 else "")
        if self.start > 0:
            text += f" from +{self.start:g} h"
        if self.loading_amount > 0:
            text = f"load {self.loading_amount:g} mg" + (f" over {self.first_duration:g} h" if self.first_duration > 0 else "") + ", then " + text
        return text


class RegimenSpace(NamedTuple):
    """What may be prescribed. Amounts in mg, times in h, rates in mg/h."""

    strength: float = 250.0
    min_amount: float = 500.0
    max_amount: float = 3000.0
    intervals: tuple[float, ...] = (8.0, 12.0, 24.0)
    durations: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    max_rate: float | None = 600.0
    max_daily: float | None = None
    loading_amounts: tuple[float, ...] = ()
    start: float = 0.0

    def shortest_duration(self, amount: float) -> float | None:
        """The shortest allowed infusion that keeps amount/duration ≤ max_rate (None: none does)."""
        for duration in sorted(self.durations):
            if self.max_rate is None or amount <= self.max_rate * duration + 1e-9:
                return duration
        return None


def candidate_regimens(space: RegimenSpace) -> list[Regimen]:
    """Every practical regimen of ``space``: each amount (multiples of ``strength`` between
    the bounds) × interval × (no load | each loading amount), each infused over its shortest
    allowed duration; regimens above ``max_daily`` are left out."""
    steps = range(math.ceil(space.min_amount / space.strength - 1e-9), math.floor(space.max_amount / space.strength + 1e-9) + 1)
    out = []
    for interval in space.intervals:
        for amount in (k * space.strength for k in steps):
            duration = space.shortest_duration(amount)
            if duration is None or (space.max_daily is not None and amount * 24.0 / interval > space.max_daily + 1e-9):
                continue
            for load in (0.0, *space.loading_amounts):
                load_duration = space.shortest_duration(load) if load > 0 else 0.0
                if load_duration is None:
                    continue
                out.append(Regimen(amount, interval, duration, space.start, load, load_duration or 0.0))
    return out


def vancomycin_loading_doses(weight_kg: float, strength: float = 250.0, cap: float = 3000.0) -> tuple[float, ...]:
    """20, 25, 30 and 35 mg/kg rounded to ``strength``, capped at 3000 mg (Rybak et al. 2020)."""
    return tuple(sorted({min(cap, strength * round(mg_per_kg * weight_kg / strength)) for mg_per_kg in (20, 25, 30, 35)}))


VANCOMYCIN_MAX_DAILY_MG = 4500.0
"""Daily maintenance cap, mg/24 h. Rybak et al. 2020 (above): empiric maintenance doses "usually
do not exceed 4500 mg/day" even in obese patients; daily doses of 4 g and more were associated
with nephrotoxicity (Lodise TP et al., Antimicrob Agents Chemother 2008;52:1330-1336). A dose the
search would want above it goes to the clinician as the capped regimen, never silently higher."""

VANCOMYCIN_SPACE = RegimenSpace(max_daily=VANCOMYCIN_MAX_DAILY_MG)
