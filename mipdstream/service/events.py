"""Stored readings, doses and covariate changes -> events on a patient's timeline (model hours, model analytes).

A sensor change is not a record of its own: an analyte whose model declares a ``Sensor`` (the
vancomycin ISF patch) is read by one device at a time, so the first reading from a device id
not seen before for that analyte marks a new sensor (a ``SensorChange`` just before it). The
first device of all is the sensor inserted at the patient's origin.
"""

from __future__ import annotations

from typing import NamedTuple

from assimilation import Dose, Model
from assimilation.events import CovariateChange, Reading, SensorChange
from ingest.records import StoredDose, StoredReading
from mipdstream.service.state_db import PatientRecord
from mipdstream.service.timeline import TimelineEvent


def analyte_of(model: Model, code: str) -> int | None:
    """Index of the model analyte that a wire analyte code observes, or None.

    A model analyte matches by its codes (LOINC / x-mipd-, ``Analyte.codes``) or its name.
    """
    for i, analyte in enumerate(model.analytes):
        if analyte.reads(code):
            return i
    return None


def reading_event(patient: PatientRecord, model: Model, reading: StoredReading) -> TimelineEvent | None:
    analyte = analyte_of(model, reading.analyte)
    if analyte is None:
        return None
    time = patient.hours(reading.measured_at)
    event = Reading(time, reading.value, analyte, censored=reading.bloq)
    return TimelineEvent(time, f"r:{reading.device_id}:{reading.reading_id}", event)


def has_sensor(model: Model, analyte: int) -> bool:
    return model.analytes[analyte].sensor is not None


def sensor_change_event(event: TimelineEvent, device_id: str) -> TimelineEvent:
    """The change to a new sensor ``device_id``, just before its first reading ``event``."""
    reading = event.event
    return TimelineEvent(event.time, f"s:{device_id}:{reading.analyte}", SensorChange(event.time, reading.analyte))


class SensorHistory(NamedTuple):
    devices: dict[int, set[str]]
    """Per analyte with a sensor, the device ids that have read it."""
    changes: list[TimelineEvent]
    """The sensor changes the readings imply (see the module doc), in time order."""


def sensor_history(patient: PatientRecord, model: Model, readings: list[StoredReading]) -> SensorHistory:
    """The sensor devices and sensor changes of a patient's stored readings, in one walk."""
    seen: dict[int, set[str]] = {}
    changes = []
    for reading in sorted(readings, key=lambda r: (r.measured_at, r.device_id)):
        event = reading_event(patient, model, reading)
        if event is None or not has_sensor(model, event.event.analyte):
            continue
        devices = seen.setdefault(event.event.analyte, set())
        if devices and reading.device_id not in devices:
            changes.append(sensor_change_event(event, reading.device_id))
        devices.add(reading.device_id)
    return SensorHistory(seen, changes)


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
