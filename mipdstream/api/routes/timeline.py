"""A patient's readings in a time range, and dose records (list; add as a clinician).

Doses entered here join the same per-patient timeline as device doses: they are written to
the store (device id ``clinician:<user>``) and handed to the assimilator."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, model_validator

from ingest.records import Batch, StoredDose
from mipdstream.api.auth import DB, Live, ReadablePatient, WritablePatient, Writer, audit
from mipdstream.api.problems import ProblemError, problem_responses

router = APIRouter(prefix="/api/v1", tags=["readings and doses"], responses=problem_responses(401, 403, 404, 422))

Epoch = Annotated[float | None, Query(ge=0, le=4.2e9, description="Epoch s")]


class ReadingOut(BaseModel):
    device_id: str
    reading_id: str
    analyte: str = Field(description="LOINC or x-mipd- code (or the model's analyte name)")
    value: float
    unit: str = Field(description="UCUM unit")
    measured_at: float
    received_at: float
    bloq: bool


class DoseIn(BaseModel):
    amount_mg: float = Field(gt=0, le=100_000)
    given_at: float | None = Field(None, ge=0, le=4.2e9, description="Start of administration, epoch s; default now.")
    duration_s: float | None = Field(None, ge=0, le=7 * 86400, description="Infusion duration, s (iv_infusion only).")
    drug: str = Field(min_length=1, max_length=64)
    route: Literal["iv_bolus", "iv_infusion", "oral", "subcutaneous", "intramuscular"]
    status: Literal["administered", "missed"] = "administered"

    @model_validator(mode="after")
    def _duration(self) -> "DoseIn":
        if self.route == "iv_infusion" and not self.duration_s:
            raise ValueError("an iv_infusion needs a positive duration_s")
        if self.route != "iv_infusion" and self.duration_s:
            raise ValueError("only an iv_infusion has a duration")
        return self


class DoseOut(BaseModel):
    device_id: str
    dose_id: str
    drug: str
    amount_mg: float
    route: str
    given_at: float
    received_at: float
    duration_s: float | None
    status: str


def _range(start_s: float | None, end_s: float | None) -> None:
    if start_s is not None and end_s is not None and end_s < start_s:
        raise ProblemError(422, "end_s is before start_s")


def dose_out(d: StoredDose) -> DoseOut:
    return DoseOut(device_id=d.device_id, dose_id=d.dose_id, drug=d.drug, amount_mg=d.amount_mg, route=d.route,
                   given_at=d.given_at, received_at=d.received_at, duration_s=d.duration_s, status=d.status)


@router.get("/patients/{patient_id}/readings", response_model=list[ReadingOut], summary="Readings in a time range")
def list_readings(patient: ReadablePatient, live: Live, start_s: Epoch = None, end_s: Epoch = None,
                  analyte: Annotated[str | None, Query(max_length=64)] = None) -> list[ReadingOut]:
    _range(start_s, end_s)
    return [
        ReadingOut(device_id=r.device_id, reading_id=r.reading_id, analyte=r.analyte, value=r.value, unit=r.unit,
                   measured_at=r.measured_at, received_at=r.received_at, bloq=r.bloq)
        for r in live.ingest.store.readings(patient.patient_id, start_s, end_s, analyte)
    ]


@router.get("/patients/{patient_id}/doses", response_model=list[DoseOut], summary="Dose records in a time range")
def list_doses(patient: ReadablePatient, live: Live, start_s: Epoch = None, end_s: Epoch = None) -> list[DoseOut]:
    _range(start_s, end_s)
    return [dose_out(d) for d in live.ingest.store.doses(patient.patient_id, start_s, end_s)]


@router.post("/patients/{patient_id}/doses", response_model=DoseOut, status_code=201, summary="Record a dose given (or missed)")
def add_dose(body: DoseIn, patient: WritablePatient, user: Writer, live: Live, db: DB) -> DoseOut:
    now = time.time()
    dose = StoredDose(
        patient_id=patient.patient_id, device_id=f"clinician:{user.username}", dose_id=uuid.uuid4().hex, seq=0,
        drug=body.drug, amount_mg=body.amount_mg, route=body.route, given_at=body.given_at or now, received_at=now,
        duration_s=body.duration_s, status=body.status,
    )
    batch = Batch(doses=[dose])
    live.ingest.store.write(batch)
    live.assimilator.submit(batch, now)
    live.events.on_commit(batch, now)
    audit(db, user, "record-dose", f"POST /api/v1/patients/{patient.patient_id}/doses", patient.patient_id,
          dose_id=dose.dose_id, amount_mg=dose.amount_mg, given_at=dose.given_at)
    return dose_out(dose)
