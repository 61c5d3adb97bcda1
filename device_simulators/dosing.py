"""The dosing history: doses as prescribed, and doses as they really happened.

Truth models compute the latent trajectory from what really happened (late, missed),
devices report what they saw; the gap between the two is what a filter must cope with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Route = Literal["iv_bolus", "iv_infusion", "oral", "subcutaneous", "intramuscular"]


@dataclass(frozen=True)
class ScheduledDose:
    """A prescribed dose."""

    t: float
    """Planned start, s since epoch."""
    drug: str
    amount_mg: float
    route: Route
    duration_s: float = 0.0
    """Planned infusion duration, s (iv_infusion only)."""


@dataclass(frozen=True)
class AdministeredDose:
    """What really happened to a scheduled dose."""

    scheduled: ScheduledDose
    t: float
    """Actual start, s since epoch (equal to the scheduled time when missed)."""
    duration_s: float
    """Actual infusion duration, s (0 for non-infusions)."""
    given: bool
    """False when the dose was missed; a missed dose contributes nothing to the truth."""

    @property
    def amount_mg(self) -> float:
        return self.scheduled.amount_mg if self.given else 0.0

    def as_dict(self) -> dict:
        s = self.scheduled
        return {
            "drug": s.drug, "route": s.route, "amount_mg": s.amount_mg, "scheduled_t": s.t,
            "t": self.t, "duration_s": self.duration_s, "given": self.given,
        }


def every(start_t: float, interval_s: float, end_t: float, drug: str, amount_mg: float, route: Route, duration_s: float = 0.0) -> list[ScheduledDose]:
    """A fixed regimen: one dose every `interval_s` from `start_t` until before `end_t`."""
    doses = []
    t = start_t
    while t < end_t:
        doses.append(ScheduledDose(t, drug, amount_mg, route, duration_s))
        t += interval_s
    return doses
