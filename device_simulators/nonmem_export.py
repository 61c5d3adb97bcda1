"""A simulated cohort written as a NONMEM event dataset, for `mipd replay` and other tools.

What goes in is what the devices said, read back through the wire contract
(`wire.messages.parse_dose_events` / `parse_readings`, values in each analyte's canonical
unit), exactly as ingest would store it; the ground truth stays out.

| column | dose row | reading row |
|---|---|---|
| ID | the patient id | |
| TIME | h since `origin_t` (default: the earliest dose or reading of the cohort) | |
| EVID, MDV | 1, 1 | 0, 0 |
| AMT | mg | . |
| RATE | mg/h for an infusion (AMT / duration), 0 for a bolus or an oral dose | . |
| CMT | the model's dose compartment, 1-based | . (the reading's analyte is DVID) |
| DV | . | the value in the analyte's canonical unit (the limit when below it) |
| DVID | . | the model's analyte, 1-based |
| CENS | . | 1 when the device reported the value below its limit of quantification |
| covariates | the model's covariates (`Model.covariate_names`), the same on every row | |

A missed dose (`status: missed`) gave no drug and has no row. A reading of an analyte the
model has no analyte for (the daily creatinine of a vancomycin cohort) is an error unless its
code is in `leave_out`. At equal TIME a patient's reading rows come before its dose rows, so
a trough at a dose's time is read before the dose in NONMEM too.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from device_simulators.cohort import SimulatedPatient
from wire.messages import Invalid, parse_dose_events, parse_readings
from wire.topics import TopicKind, parse_topic

__all__ = ["COLUMNS", "nonmem_rows", "write_nonmem_csv", "analyte_numbers"]

COLUMNS = ("ID", "TIME", "EVID", "MDV", "AMT", "RATE", "CMT", "DV", "DVID", "CENS")


def analyte_numbers(model, codes: Mapping[str, str] | None = None) -> dict[str, int]:
    """Wire analyte code -> the model's 1-based analyte number (DVID): the analytes' own codes,
    and ``codes`` (code -> analyte name, e.g. a library binding's names turned round)."""
    numbers = {a.code: i + 1 for i, a in enumerate(model.analytes) if a.code}
    for code, name in (codes or {}).items():
        numbers[code] = model.analyte_index(name) + 1
    return numbers


def nonmem_rows(patients: Sequence[SimulatedPatient], model, *, origin_t: float | None = None,
                codes: Mapping[str, str] | None = None, leave_out: Iterable[str] = ()) -> list[dict[str, str]]:
    """The cohort's rows (column -> text), patient by patient in time order."""
    numbers = analyte_numbers(model, codes)
    leave_out = set(leave_out)
    events = {p.patient_id: _events(p, numbers, leave_out) for p in patients}
    times = [t for patient_events in events.values() for t, *_ in patient_events]
    if origin_t is None:
        origin_t = min(times, default=0.0)
    rows = []
    for patient in patients:
        covariates = {name: _text(patient.covariates[name]) for name in model.covariate_names}
        for t, order, fields in sorted(events[patient.patient_id], key=lambda e: (e[0], e[1])):
            row = dict.fromkeys(COLUMNS, ".") | fields | covariates
            row["ID"], row["TIME"] = patient.patient_id, _text((t - origin_t) / 3600.0)
            if "AMT" in fields:
                row["CMT"] = str(model.dose_compartment + 1)
            rows.append(row)
    return rows


def _events(patient: SimulatedPatient, numbers: Mapping[str, int], leave_out: set) -> list[tuple[float, int, dict]]:
    """(device time s, 0 reading / 1 dose, fields) of every reading and dose the devices sent."""
    out = []
    for message in patient.messages:
        topic = parse_topic(message.topic)
        if topic is None or topic.kind not in (TopicKind.READING, TopicKind.DOSE):
            continue
        if topic.kind == TopicKind.DOSE:
            for dose in _valid(parse_dose_events(message.payload, message.sim_t), message):
                if dose.dose.status == "administered":
                    out.append((dose.dose.t, 1, _dose_fields(dose.amount_mg, dose.dose.dur)))
            continue
        for reading in _valid(parse_readings(message.payload, message.sim_t), message):
            code = reading.reading.n
            if code in leave_out:
                continue
            if code not in numbers:
                raise ValueError(f"patient {patient.patient_id}: a reading of {code!r}, for which the model has no analyte "
                                 f"(it has {sorted(numbers)}); pass leave_out={{{code!r}}} to export without it")
            out.append((reading.reading.t, 0, {"EVID": "0", "MDV": "0", "DV": _text(reading.value),
                                               "DVID": str(numbers[code]), "CENS": "1" if reading.reading.bloq else "0"}))
    return out


def _dose_fields(amount_mg: float, duration_s: float | None) -> dict[str, str]:
    rate = amount_mg / (duration_s / 3600.0) if duration_s else 0.0
    return {"EVID": "1", "MDV": "1", "AMT": _text(amount_mg), "RATE": _text(rate)}


def _valid(results: list, message) -> list:
    bad = [r for r in results if isinstance(r, Invalid)]
    if bad:
        raise ValueError(f"message on {message.topic} at {message.sim_t}: {bad[0].reason.value}: {bad[0].detail}")
    return results


def _text(value) -> str:
    """Floats as their shortest exact decimal (read back to the same float)."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def write_nonmem_csv(path: Path, patients: Sequence[SimulatedPatient], model, **options) -> Path:
    """Write :func:`nonmem_rows` (``options`` as there) as a CSV with a header row."""
    rows = nonmem_rows(patients, model, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS) + list(model.covariate_names))
        writer.writeheader()
        writer.writerows(rows)
    return path
