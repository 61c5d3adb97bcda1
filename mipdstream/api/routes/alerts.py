"""Alerts of the team's patients: list and filter, acknowledge."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from mipdstream.api.auth import DB, Live, ReadablePatient, Reader, Writer, audit, resource_of
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service.state_db import AlertRecord

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=problem_responses(401, 403, 404, 409, 422))

Status = Annotated[Literal["open", "acknowledged"] | None, Query(description="Only alerts in this state")]
Severity = Annotated[str | None, Query(max_length=32)]
Kind = Annotated[str | None, Query(max_length=64)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class AlertOut(BaseModel):
    alert_id: str
    patient_id: str
    kind: str
    severity: str
    raised_at: float
    time_h: float
    message: str
    details: dict[str, Any]
    revised: bool
    status: str
    acknowledged_by: str | None
    acknowledged_at: float | None


def alert_out(a: AlertRecord) -> AlertOut:
    return AlertOut(**a.__dict__)


def _filtered(alerts: list[AlertRecord], severity: str | None, kind: str | None) -> list[AlertOut]:
    return [alert_out(a) for a in alerts if (severity is None or a.severity == severity) and (kind is None or a.kind == kind)]


@router.get("/alerts", response_model=list[AlertOut], summary="Alerts of the team's patients, newest first")
def list_alerts(request: Request, user: Reader, db: DB, status: Status = None, severity: Severity = None,
                kind: Kind = None, limit: Limit = 200) -> list[AlertOut]:
    mine = {p.patient_id for p in db.patients() if p.team == user.team}
    audit(db, user, "read", resource_of(request))
    alerts = [a for a in db.alerts(status=status, limit=100_000) if a.patient_id in mine]
    return _filtered(alerts, severity, kind)[:limit]


@router.get("/patients/{patient_id}/alerts", response_model=list[AlertOut], summary="The patient's alerts, newest first")
def patient_alerts(patient: ReadablePatient, db: DB, status: Status = None, severity: Severity = None,
                   kind: Kind = None, limit: Limit = 200) -> list[AlertOut]:
    return _filtered(db.alerts(patient.patient_id, status, 100_000), severity, kind)[:limit]


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertOut, summary="Acknowledge an open alert")
def acknowledge(alert_id: str, user: Writer, db: DB, live: Live) -> AlertOut:
    alert = db.alert(alert_id)
    patient = None if alert is None else db.patient(alert.patient_id)
    if patient is None or patient.team != user.team:
        raise ProblemError(404, f"no alert {alert_id!r} in your team")
    if not db.acknowledge_alert(alert_id, user.username, time.time()):
        raise ProblemError(409, f"alert {alert_id!r} is not open")
    updated = db.alert(alert_id)
    audit(db, user, "acknowledge-alert", f"POST /api/v1/alerts/{alert_id}/acknowledge", alert.patient_id, alert_id=alert_id)
    live.events.on_alerts([updated])
    return alert_out(updated)
