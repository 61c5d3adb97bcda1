"""A patient's regimen on the clock: stored records (epoch s) and the dosing policy's
:class:`dosing_policy.Regimen` (h after a decision time) converted into each other, and the
regimen that is current.

The current regimen is the one a clinician set (by hand, or by accepting a recommendation) if
it was set after the last dose given; otherwise the one the doses given imply (the last dose
repeated at the last interval, :func:`mipdstream.service.policy.current_regimen`), which is
also what the dosing policy assesses. A forecast "under the current regimen" is then the same
in the API, the patient page and the alerts.
"""

from __future__ import annotations

from assimilation import Dose
from dosing_policy import Regimen
from mipdstream.service.state_db import PatientRecord, RecommendationRecord, RegimenRecord

INFERRED = "inferred from the doses given"


def from_details(details: dict) -> Regimen | None:
    """The recommended :class:`Regimen` an alert or recommendation carries (``details["regimen"]``)."""
    structured = details.get("regimen")
    if not isinstance(structured, dict) or not {"amount", "interval"} <= structured.keys():
        return None
    known = set(Regimen._fields)
    return Regimen(**{k: float(v) for k, v in structured.items() if k in known})


def to_details(regimen: Regimen) -> dict[str, float]:
    return {k: float(v) for k, v in regimen._asdict().items()}


def at_clock(patient: PatientRecord, regimen: Regimen, decision_h: float) -> dict[str, float]:
    """The regimen's fields as a record stores them: amounts, durations and its first dose in epoch s."""
    return dict(amount_mg=regimen.amount, interval_h=regimen.interval, duration_h=regimen.duration,
                start_s=patient.origin_s + 3600.0 * (decision_h + regimen.start),
                loading_amount_mg=regimen.loading_amount, loading_duration_h=regimen.loading_duration)


def describe(record: RegimenRecord | RecommendationRecord) -> str:
    """As :meth:`dosing_policy.Regimen.describe` (without the start, which is a clock time here)."""
    return as_regimen(record).describe()


def as_regimen(record: RegimenRecord | RecommendationRecord) -> Regimen:
    return Regimen(record.amount_mg, record.interval_h, record.duration_h, 0.0, record.loading_amount_mg, record.loading_duration_h)


def doses_between(patient: PatientRecord, record: RegimenRecord | RecommendationRecord, from_h: float, until_h: float,
                  limit: int = 512) -> list[Dose]:
    """The record's doses that start in [from_h, until_h) (model h), the loading dose first."""
    first = patient.hours(record.start_s)
    regimen = as_regimen(record)
    k = max(0, int(-(-(from_h - first) // record.interval_h))) if from_h > first else 0
    out = []
    while (t := first + k * record.interval_h) < until_h and len(out) < limit:
        loading = k == 0 and record.loading_amount_mg > 0
        out.append(Dose(t, regimen.first_amount if loading else record.amount_mg, None,
                        regimen.first_duration if loading else record.duration_h))
        k += 1
    return out


def current(patient: PatientRecord, stored: RegimenRecord | None, doses: list[Dose], now_s: float,
            inferred: Regimen | None) -> RegimenRecord | None:
    """The current regimen (see the module doc). ``inferred``: the regimen the doses imply,
    relative to ``now_s`` (None without doses)."""
    last_dose_s = patient.origin_s + 3600.0 * doses[-1].time if doses else float("-inf")
    if stored is not None and stored.set_at >= last_dose_s:
        return stored
    if inferred is None:
        return stored
    return RegimenRecord(patient.patient_id, set_by=INFERRED, set_at=now_s,
                         **at_clock(patient, inferred, patient.hours(now_s)))
