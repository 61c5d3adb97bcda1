"""The triage list: the team's patients ranked by risk, with open alerts and the time since the
last reading.

Risk is the posterior probability of being out of target over the drug's next target window
(the next 24 h of AUC24 for vancomycin, the week's INR time in range for warfarin, the cycle's
ANC nadir for docetaxel) under the current regimen, as the dosing policy last assessed it
(1 when no dose has been given: none of these targets is met without the drug). Ties go to the
patient whose predicted exit from the target comes first (the start of the first window in
which P(out of target) reaches 1/2), then to the one with more open alerts.

A patient of a user model without a dosing policy is ranked by P(level outside the team's
range) at the posterior's time; without a range, by its alerts (risk None).
"""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from mipdstream.api import forecasting
from mipdstream.api.auth import DB, Live, Reader, audit, resource_of
from mipdstream.api.problems import problem_responses
from mipdstream.api.routes.patients import TargetOut, target_out
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import AssessmentRecord, PatientRecord

router = APIRouter(prefix="/api/v1", tags=["triage"], responses=problem_responses(401, 403, 422))

SEVERITY_RANK = {"critical": 3, "high": 2, "warning": 1, "info": 0}
_risk_cache: dict[str, tuple[tuple[float, float, float], float]] = {}  # patient -> (posterior time, target), risk
_risk_lock = threading.Lock()


class TriageRow(BaseModel):
    patient_id: str
    model: str
    risk: float | None = Field(description="P(out of target) over the next target window under the current regimen; "
                                           "None only for a user model with no target.")
    risk_basis: str = Field(description="What the risk is, in words: the target, the window, and since when it is assessed.")
    target: TargetOut | None
    predicted_exit_s: float | None = Field(description="Epoch s at which P(out of target) reaches 1/2 (None: not within the windows assessed).")
    assessed_at: float | None = Field(description="Epoch s of the dosing policy's assessment behind the risk.")
    open_alerts: int
    worst_severity: str | None
    last_reading_at: float | None
    seconds_since_last_reading: float | None
    posterior_time_h: float | None


def level_risk(live: LiveService, patient: PatientRecord) -> float | None:
    """P(first analyte outside the team's range) at the posterior's time (models without a policy)."""
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


def _basis(assessment: AssessmentRecord, patient: PatientRecord) -> str:
    regimen = "no dose given yet" if assessment.current is None else "current regimen"
    hours = assessment.window_h
    window = f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} h"
    return f"chance of missing {assessment.pta_label} over the {window} from the next dose ({regimen})"


def row(live: LiveService, patient: PatientRecord, now: float, assessment: AssessmentRecord | None) -> TriageRow:
    alerts = live.db.alerts(patient.patient_id, status="open")
    readings = live.ingest.store.readings(patient.patient_id, start=now - 30 * 86400)
    last = readings[-1].measured_at if readings else None
    found = live.assimilator.posterior(patient.patient_id)
    target = target_out(live.db.target(patient.patient_id), patient.model)
    if assessment is not None:
        risk, basis = assessment.risk, _basis(assessment, patient)
        exit_h = assessment.exit_h()
        exit_s = None if exit_h is None else patient.origin_s + 3600 * exit_h
    elif target is not None and target.quantity != "level":
        if live.ingest.store.doses(patient.patient_id):
            risk, basis, exit_s = None, "being assessed (the dosing policy has not reported yet)", None
        else:  # none of the drugs' targets is met without the drug
            risk, basis, exit_s = 1.0, f"no dose recorded: {target.quantity} cannot be in {target.low:g}-{target.high:g}", now
    else:
        risk, exit_s = level_risk(live, patient), None
        basis = "no target" if risk is None else f"P(level outside {target.low:g}-{target.high:g} {target.unit}) now"
    return TriageRow(
        patient_id=patient.patient_id, model=patient.model.rsplit("/", 1)[-1].removesuffix(".py"),
        risk=risk, risk_basis=basis, target=target, predicted_exit_s=exit_s,
        assessed_at=None if assessment is None else assessment.assessed_at, open_alerts=len(alerts),
        worst_severity=max((a.severity for a in alerts), key=lambda s: SEVERITY_RANK.get(s, 0), default=None),
        last_reading_at=last, seconds_since_last_reading=None if last is None else max(0.0, now - last),
        posterior_time_h=found[1] if found and found[1] > float("-inf") else None,
    )


def triage_order(r: TriageRow) -> tuple:
    """Highest risk first; then the earliest predicted exit; then more open alerts; then id."""
    risk = -(r.risk if r.risk is not None else -1.0)
    exit_s = r.predicted_exit_s if r.predicted_exit_s is not None else float("inf")
    return (round(risk, 6), exit_s, -r.open_alerts, r.patient_id)


@router.get("/triage", response_model=list[TriageRow], summary="The team's patients, highest risk first")
def triage(request: Request, user: Reader, live: Live, db: DB) -> list[TriageRow]:
    audit(db, user, "read", resource_of(request))
    now = time.time()
    assessments = db.assessments()
    rows = [row(live, p, now, assessments.get(p.patient_id)) for p in db.patients() if p.team == user.team]
    return sorted(rows, key=triage_order)
