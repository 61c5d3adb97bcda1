"""The triage list: the team's patients ranked by risk (probability out of the target range
now), with open alerts and the time since the last reading."""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from mipdstream.api import forecasting
from mipdstream.api.auth import DB, Live, Reader, audit, resource_of
from mipdstream.api.problems import problem_responses
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import PatientRecord

router = APIRouter(prefix="/api/v1", tags=["triage"], responses=problem_responses(401, 403, 422))

SEVERITY_RANK = {"critical": 3, "high": 2, "warning": 1, "info": 0}
_risk_cache: dict[str, tuple[tuple[float, float, float], float]] = {}  # patient -> (posterior time, target), risk
_risk_lock = threading.Lock()


class TriageRow(BaseModel):
    patient_id: str
    model: str
    risk: float | None = Field(description="P(level outside the target range) at the posterior's time; None without a target.")
    open_alerts: int
    worst_severity: str | None
    last_reading_at: float | None
    seconds_since_last_reading: float | None
    posterior_time_h: float | None


def risk_of(live: LiveService, patient: PatientRecord) -> float | None:
    target = live.db.target(patient.patient_id)
    if target is None:
        return None
    posterior, time_h = forecasting.current_posterior(live, patient)
    t = max(time_h or 0.0, 0.0)
    key = (t, target.low, target.high)
    with _risk_lock:
        cached = _risk_cache.get(patient.patient_id)
    if cached is not None and cached[0] == key:
        return cached[1]
    risk = forecasting.probability_out_of_target(posterior, t, target)
    with _risk_lock:
        _risk_cache[patient.patient_id] = (key, risk)
    return risk


def row(live: LiveService, patient: PatientRecord, now: float) -> TriageRow:
    alerts = live.db.alerts(patient.patient_id, status="open")
    readings = live.ingest.store.readings(patient.patient_id, start=now - 30 * 86400)
    last = readings[-1].measured_at if readings else None
    found = live.assimilator.posterior(patient.patient_id)
    return TriageRow(
        patient_id=patient.patient_id, model=patient.model.rsplit("/", 1)[-1].removesuffix(".py"),
        risk=risk_of(live, patient), open_alerts=len(alerts),
        worst_severity=max((a.severity for a in alerts), key=lambda s: SEVERITY_RANK.get(s, 0), default=None),
        last_reading_at=last, seconds_since_last_reading=None if last is None else max(0.0, now - last),
        posterior_time_h=found[1] if found and found[1] > float("-inf") else None,
    )


@router.get("/triage", response_model=list[TriageRow], summary="The team's patients, highest risk first")
def triage(request: Request, user: Reader, live: Live, db: DB) -> list[TriageRow]:
    audit(db, user, "read", resource_of(request))
    now = time.time()
    rows = [row(live, p, now) for p in db.patients() if p.team == user.team]
    return sorted(rows, key=lambda r: (-(r.risk if r.risk is not None else -1.0), -r.open_alerts, r.patient_id))
