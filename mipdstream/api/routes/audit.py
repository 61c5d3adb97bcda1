"""The append-only audit log of the team: every read of patient data and every decision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from mipdstream.api.auth import DB, Role, requires
from mipdstream.api.problems import problem_responses
from mipdstream.service.state_db import ApiUser

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=problem_responses(401, 403, 422))

Auditor = Annotated[ApiUser, Depends(requires(Role.clinician, Role.team_admin))]


class AuditOut(BaseModel):
    seq: int
    at: float
    actor: str
    role: str
    action: str
    patient_id: str | None
    resource: str
    recommendation_hash: str | None
    detail: dict[str, Any]


@router.get("/audit", response_model=list[AuditOut], summary="The team's audit log, newest first")
def audit_log(user: Auditor, db: DB, patient_id: Annotated[str | None, Query(max_length=128)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditOut]:
    return [
        AuditOut(seq=e.seq, at=e.at, actor=e.actor, role=e.role, action=e.action, patient_id=e.patient_id, resource=e.resource,
                 recommendation_hash=e.recommendation_hash, detail=e.detail)
        for e in db.audit_log(team=user.team, patient_id=patient_id, limit=limit)
    ]
