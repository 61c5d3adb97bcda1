"""The audit log of the team (every read of patient data and every decision) and the head of
the hash chain all records form (mipdstream/service/audit_log.py), for anchoring elsewhere."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from mipdstream.api.auth import DB, Role, requires
from mipdstream.api.problems import problem_responses
from mipdstream.service.state_db import ApiUser

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=problem_responses(401, 403, 422))

Auditor = Annotated[ApiUser, Depends(requires(Role.clinician, Role.team_admin))]
# The head names no patient and no team: a read-only account (an anchoring system's) may read it.
HeadReader = Annotated[ApiUser, Depends(requires(Role.clinician, Role.team_admin, Role.read_only))]


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
    model_hash: str | None = Field(None, description="Decisions: the model hash of the recommendation decided on.")
    data_hash: str | None = Field(None, description="Decisions: the hash of the data the recommendation was computed from.")
    seed: int | str | None = Field(None, description="Decisions: the filter seed of the recommendation.")
    hash: str | None = Field(None, description="sha256 of this record, its predecessor's hash included.")


class AuditHead(BaseModel):
    seq: int = Field(description="The last record's id (0: no record yet).")
    hash: str = Field(description="The last record's sha256 (64 zeros: no record yet).")
    count: int = Field(description="Records in the chain, of every team.")


@router.get("/audit", response_model=list[AuditOut], summary="The team's audit log, newest first")
def audit_log(user: Auditor, db: DB, patient_id: Annotated[str | None, Query(max_length=128)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[AuditOut]:
    return [
        AuditOut(seq=e.seq, at=e.at, actor=e.actor, role=e.role, action=e.action, patient_id=e.patient_id, resource=e.resource,
                 recommendation_hash=e.recommendation_hash, detail=e.detail, model_hash=e.model_hash, data_hash=e.data_hash,
                 seed=e.seed, hash=e.hash)
        for e in db.audit_log(team=user.team, patient_id=patient_id, limit=limit)
    ]


@router.get("/audit/head", response_model=AuditHead,
            summary="The head of the audit hash chain (last record's id and hash, record count), to anchor elsewhere")
def audit_head(user: HeadReader, db: DB) -> AuditHead:
    head = db.audit_head()
    return AuditHead(seq=head.seq, hash=head.hash, count=head.count)
