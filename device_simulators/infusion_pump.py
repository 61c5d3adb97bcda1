"""A smart infusion pump: it reports each infusion it runs, and knows nothing of the others.

Nurses start infusions late (the ward is busy), sometimes very late, and sometimes a dose
is never hung. The pump reports an infusion when it starts it; a dose it never ran is
simply absent from its stream, which is how a missed IV dose looks in real data.
The delay and omission rates are ASSUMPTIONS for a busy ward, not measured figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device_simulators.device import DeviceIdentity
from device_simulators.dose_event import dose_message
from device_simulators.dosing import AdministeredDose, ScheduledDose
from device_simulators.message import Message


@dataclass(frozen=True)
class InfusionPumpParams:
    """Administration error model of a ward's IV infusions."""

    delay_mean_s: float = 600.0
    """Mean delay of an on-time start, s (exponential)."""
    late_probability: float = 0.1
    """Probability that a dose is late."""
    late_mean_s: float = 5400.0
    """Mean extra delay of a late dose, s (exponential)."""
    missed_probability: float = 0.02
    """Probability that a scheduled dose is never given."""
    duration_cv: float = 0.05
    """Relative error of the actual infusion duration (rate setting, line occlusion)."""
    report_delay_s: float = 5.0
    """Time from the start of infusion to the report, s."""


class InfusionPump:
    def __init__(self, identity: DeviceIdentity, params: InfusionPumpParams, rng: np.random.Generator):
        self.identity = identity
        self.params = params
        self.rng = rng

    def administer(self, schedule: Sequence[ScheduledDose]) -> list[AdministeredDose]:
        p = self.params
        administered = []
        for dose in schedule:
            if self.rng.random() < p.missed_probability:
                administered.append(AdministeredDose(dose, dose.t, 0.0, given=False))
                continue
            delay = self.rng.exponential(p.delay_mean_s) if p.delay_mean_s > 0 else 0.0
            if self.rng.random() < p.late_probability:
                delay += self.rng.exponential(p.late_mean_s)
            duration = dose.duration_s * max(0.5, 1.0 + self.rng.normal(0.0, p.duration_cv))
            administered.append(AdministeredDose(dose, dose.t + delay, duration, given=True))
        return administered

    def messages(self, administered: Sequence[AdministeredDose]) -> list[Message]:
        return [dose_message(self.identity, d, d.t + self.params.report_delay_s) for d in administered if d.given]
