"""An electronic pillbox: it records when a compartment is opened, and when it is not.

A dose taken late is reported with the opening time; a compartment not opened within
the allowed window is reported as `missed` at the end of the window. (Opening is not
swallowing: the truth here assumes an opened dose was taken.) The adherence figures are
ASSUMPTIONS for an outpatient on an oral drug, not measured figures.
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
class PillboxParams:
    """Adherence model of a patient with an e-pillbox."""

    timing_sd_s: float = 900.0
    """SD of an on-time intake around the scheduled time, s (normal, truncated at -window)."""
    late_probability: float = 0.15
    """Probability that a dose is taken late."""
    late_mean_s: float = 3 * 3600.0
    """Mean extra delay of a late intake, s (exponential)."""
    missed_probability: float = 0.08
    """Probability that a dose is not taken at all."""
    window_s: float = 6 * 3600.0
    """A compartment not opened this long after the scheduled time counts as missed, s."""
    report_delay_s: float = 30.0
    """Time from opening (or window end) to the report, s."""


class Pillbox:
    def __init__(self, identity: DeviceIdentity, params: PillboxParams, rng: np.random.Generator):
        self.identity = identity
        self.params = params
        self.rng = rng

    def administer(self, schedule: Sequence[ScheduledDose]) -> list[AdministeredDose]:
        p = self.params
        administered = []
        for dose in schedule:
            offset = self.rng.normal(0.0, p.timing_sd_s)
            if self.rng.random() < p.late_probability:
                offset = abs(offset) + self.rng.exponential(p.late_mean_s)
            missed = self.rng.random() < p.missed_probability or offset > p.window_s
            if missed:
                administered.append(AdministeredDose(dose, dose.t, 0.0, given=False))
            else:
                administered.append(AdministeredDose(dose, dose.t + max(offset, -p.window_s), 0.0, given=True))
        return administered

    def messages(self, administered: Sequence[AdministeredDose]) -> list[Message]:
        p = self.params
        out = []
        for d in administered:
            # a missed dose is only known once its window has closed
            known_at = d.t + p.report_delay_s if d.given else d.scheduled.t + p.window_s + p.report_delay_s
            out.append(dose_message(self.identity, d, known_at))
        return out
