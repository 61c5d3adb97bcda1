"""Dosing recommendations (from the dosing policy) and the regimen they change.

Accepting a recommendation makes its regimen the patient's current one; rejecting keeps the
regimen. Both need a reason and are audited with the recommendation's hash."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from mipdstream.api.forecasting import current_regimen_record
from mipdstream.api.auth import DB, Live, ReadablePatient, Reader, WritablePatient, Writer, audit, resource_of
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service import regimens
from mipdstream.service.state_db import RecommendationRecord, RegimenRecord

router = APIRouter(prefix="/api/v1", tags=["recommendations"], responses=problem_responses(401, 403, 404, 409, 422))

RecommendationStatus = Literal["open", "accepted", "rejected", "superseded", "withdrawn"]
Status = Annotated[RecommendationStatus | None, Query()]


class RegimenIn(BaseModel):
    amount_mg: float = Field(gt=0, le=100_000)
    interval_h: float = Field(ge=1, le=504, description="Dosing interval, h (at least 1; 504 = every 21 days).")
    duration_h: float = Field(0.0, ge=0, le=24, description="Infusion duration, h (0: bolus).")
    start_s: float | None = Field(None, ge=0, le=4.2e9, description="First dose, epoch s; default now.")
    loading_amount_mg: float = Field(0.0, ge=0, le=100_000, description="A loading dose as the first dose (0: none).")
    loading_duration_h: float = Field(0.0, ge=0, le=24, description="Its infusion duration, h (0: the maintenance duration).")


class RegimenOut(BaseModel):
    patient_id: str
    amount_mg: float
    interval_h: float
    duration_h: float
    start_s: float
    loading_amount_mg: float = 0.0
    loading_duration_h: float = 0.0
    set_by: str | None = Field(None, description="Who set it; 'inferred from the doses given' when nobody did.")
    set_at: float | None = None
    recommendation_id: str | None = None
    description: str


class RegimenState(BaseModel):
    current: RegimenOut | None
    history: list[RegimenOut] = Field(description="Newest first.")


class RecommendationOut(BaseModel):
    recommendation_id: str
    patient_id: str
    created_at: float
    regimen: RegimenOut
    rationale: str
    hash: str = Field(description="sha256 of what was proposed; cited in the audit log.")
    details: dict[str, Any]
    status: RecommendationStatus
    decided_by: str | None
    decided_at: float | None
    reason: str | None


class Decision(BaseModel):
    decision: Literal["accept", "reject"]
    reason: str = Field(min_length=1, max_length=2000)


def regimen_out(patient_id: str, r: RegimenRecord | RecommendationRecord) -> RegimenOut:
    is_record = isinstance(r, RegimenRecord)
    return RegimenOut(
        patient_id=patient_id, amount_mg=r.amount_mg, interval_h=r.interval_h, duration_h=r.duration_h, start_s=r.start_s,
        loading_amount_mg=r.loading_amount_mg, loading_duration_h=r.loading_duration_h,
        set_by=r.set_by if is_record else None, set_at=r.set_at if is_record else None,
        recommendation_id=r.recommendation_id if is_record else None,
        description=regimens.describe(r),
    )


def recommendation_out(r: RecommendationRecord) -> RecommendationOut:
    return RecommendationOut(
        recommendation_id=r.recommendation_id, patient_id=r.patient_id, created_at=r.created_at,
        regimen=regimen_out(r.patient_id, r), rationale=r.rationale, hash=r.hash, details=r.details, status=r.status,
        decided_by=r.decided_by, decided_at=r.decided_at, reason=r.reason,
    )


@router.get("/recommendations", response_model=list[RecommendationOut], summary="Recommendations for the team's patients")
def list_recommendations(request: Request, user: Reader, db: DB, status: Status = None) -> list[RecommendationOut]:
    mine = {p.patient_id for p in db.patients() if p.team == user.team}
    audit(db, user, "read", resource_of(request))
    return [recommendation_out(r) for r in db.recommendations(status=status, limit=100_000) if r.patient_id in mine][:500]


@router.get("/patients/{patient_id}/recommendations", response_model=list[RecommendationOut], summary="The patient's recommendations")
def patient_recommendations(patient: ReadablePatient, db: DB, status: Status = None) -> list[RecommendationOut]:
    return [recommendation_out(r) for r in db.recommendations(patient.patient_id, status)]


# why a decision is refused, by the status the recommendation has instead of open
NOT_OPEN_ANY_MORE = {"superseded": "a newer recommendation replaced it",
                     "withdrawn": "the dosing policy withdrew it (the current regimen is now about as good)"}


@router.post("/recommendations/{recommendation_id}/decision", response_model=RecommendationOut,
             summary="Accept (changes the regimen) or reject a recommendation, with a reason")
def decide(recommendation_id: str, body: Decision, user: Writer, db: DB, live: Live) -> RecommendationOut:
    rec = db.recommendation(recommendation_id)
    patient = None if rec is None else db.patient(rec.patient_id)
    if patient is None or patient.team != user.team:
        raise ProblemError(404, f"no recommendation {recommendation_id!r} in your team")
    status = "accepted" if body.decision == "accept" else "rejected"
    now = time.time()
    if not db.decide_recommendation(recommendation_id, status, user.username, body.reason, now):
        now_status = db.recommendation(recommendation_id).status
        why = NOT_OPEN_ANY_MORE.get(now_status, f"it was already {now_status}")
        raise ProblemError(409, f"recommendation {recommendation_id!r} is no longer open: {why}")
    if status == "accepted":
        db.set_regimen(RegimenRecord(rec.patient_id, rec.amount_mg, rec.interval_h, rec.duration_h, rec.start_s,
                                     user.username, now, rec.recommendation_id, rec.loading_amount_mg, rec.loading_duration_h))
    audit(db, user, f"{body.decision}-recommendation", f"POST /api/v1/recommendations/{recommendation_id}/decision",
          rec.patient_id, rec.hash, recommendation_id=recommendation_id, reason=body.reason)
    decided = db.recommendation(recommendation_id)
    live.events.publish("recommendation", rec.patient_id, {"recommendation_id": recommendation_id, "status": status,
                                                             "decided_by": user.username})
    return recommendation_out(decided)


@router.get("/patients/{patient_id}/regimen", response_model=RegimenState,
            summary="Current regimen (set by the team after the last dose, else the one the doses given follow) and the history of those set")
def get_regimen(patient: ReadablePatient, db: DB, live: Live) -> RegimenState:
    history = [regimen_out(patient.patient_id, r) for r in db.regimens(patient.patient_id)]
    current = current_regimen_record(live, patient)
    return RegimenState(current=None if current is None else regimen_out(patient.patient_id, current), history=history)


@router.put("/patients/{patient_id}/regimen", response_model=RegimenOut, summary="Set the regimen by hand")
def set_regimen(body: RegimenIn, patient: WritablePatient, user: Writer, db: DB, live: Live) -> RegimenOut:
    now = time.time()
    record = RegimenRecord(patient.patient_id, body.amount_mg, body.interval_h, body.duration_h, body.start_s or now,
                           user.username, now, None, body.loading_amount_mg, body.loading_duration_h)
    db.set_regimen(record)
    audit(db, user, "set-regimen", f"PUT /api/v1/patients/{patient.patient_id}/regimen", patient.patient_id,
          regimen=regimens.describe(record))
    live.events.publish("regimen", patient.patient_id, {"description": regimens.describe(record)})
    return regimen_out(patient.patient_id, record)
