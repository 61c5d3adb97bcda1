"""Stored readings, doses and covariate changes -> events on a patient's timeline (model hours, model analytes)."""

from __future__ import annotations

from assimilation import Dose, Model
from assimilation.events import CovariateChange, Reading
from ingest.records import StoredDose, StoredReading
from mipdstream.service.state_db import PatientRecord
from mipdstream.service.timeline import TimelineEvent


def analyte_of(model: Model, code: str) -> int | None:
    """Index of the model analyte that a wire analyte code observes, or None.

    A model analyte matches by its ``code`` attribute (LOINC / x-mipd- code) or its name.
    """
    for i, analyte in enumerate(model.analytes):
        if code in (getattr(analyte, "code", None), analyte.name):
            return i
    return None


def reading_event(patient: PatientRecord, model: Model, reading: StoredReading) -> TimelineEvent | None:
    analyte = analyte_of(model, reading.analyte)
    if analyte is None:
        return None
    time = patient.hours(reading.measured_at)
    event = Reading(time, reading.value, analyte, censored=reading.bloq)
    return TimelineEvent(time, f"r:{reading.device_id}:{reading.reading_id}", event)


def dose_event(patient: PatientRecord, dose: StoredDose) -> TimelineEvent | None:
    if dose.status != "administered" or dose.amount_mg <= 0:
        return None  # a missed dose gives no drug; it stays in the store for the record
    time = patient.hours(dose.given_at)
    duration_h = (dose.duration_s or 0.0) / 3600.0
    return TimelineEvent(time, f"d:{dose.device_id}:{dose.dose_id}", Dose(time, dose.amount_mg, None, duration_h))


def covariate_events(patient: PatientRecord) -> list[TimelineEvent]:
    """The patient's recorded covariate changes on its timeline (the API refuses changes before
    the patient's origin: the starting covariates are corrected with PUT .../covariates)."""
    out = []
    for change in patient.covariate_changes:
        time = patient.hours(change.at_s)
        out.append(TimelineEvent(time, f"c:{change.at_s!r}", CovariateChange(time, dict(change.values))))
    return out
