"""Who is calling, what their role allows, and which patients their team may see.

Credentials: ``Authorization: Bearer <token>`` (a session token from ``POST /api/v1/auth/token``),
``X-API-Key: <key>``, or the dashboard's session cookie (``SameSite=Strict``). Patients of
another team are reported as not found, so ids do not leak across teams. Every read of a
patient's data goes through :func:`readable_patient`, which writes the audit entry.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from mipdstream.api.problems import ProblemError
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import ApiUser, AuditEntry, PatientRecord, ServiceDB

SESSION_COOKIE = "mipd_session"


class Role(str, Enum):
    clinician = "clinician"
    team_admin = "team-admin"
    device_vendor = "device-vendor"
    read_only = "read-only"


READERS = (Role.clinician, Role.team_admin, Role.read_only)
WRITERS = (Role.clinician, Role.team_admin)

_bearer = HTTPBearer(auto_error=False, description="Session token from POST /api/v1/auth/token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key from POST /api/v1/users/{username}/api-keys")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Dashboard session cookie")


def get_live(request: Request) -> LiveService:
    return request.app.state.live


def get_db(request: Request) -> ServiceDB:
    return request.app.state.live.db


Live = Annotated[LiveService, Depends(get_live)]
DB = Annotated[ServiceDB, Depends(get_db)]


def current_user(
    db: DB,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> ApiUser:
    secret = bearer.credentials if bearer is not None else api_key or cookie
    user = db.user_for_secret(secret) if secret else None
    if user is None:
        raise ProblemError(401, "a valid bearer token, API key or session is required", {"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[ApiUser, Depends(current_user)]


def requires(*roles: Role):
    allowed = {role.value for role in roles}

    def check(user: CurrentUser) -> ApiUser:
        if user.role not in allowed:
            raise ProblemError(403, f"role {user.role!r} may not do this (needs one of: {', '.join(sorted(allowed))})")
        return user

    return check


Reader = Annotated[ApiUser, Depends(requires(*READERS))]
Writer = Annotated[ApiUser, Depends(requires(*WRITERS))]
Admin = Annotated[ApiUser, Depends(requires(Role.team_admin))]
VendorOrTeam = Annotated[ApiUser, Depends(requires(*Role))]


def audit(db: ServiceDB, user: ApiUser, action: str, resource: str, patient_id: str | None = None,
          recommendation_hash: str | None = None, **detail) -> None:
    db.audit(AuditEntry(time.time(), user.username, user.role, user.team, action, patient_id, resource,
                        recommendation_hash, detail))


def resource_of(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{request.method} {request.url.path}{query}"


def team_patient(db: ServiceDB, user: ApiUser, patient_id: str) -> PatientRecord:
    patient = db.patient(patient_id)
    if patient is None or patient.team != user.team:
        raise ProblemError(404, f"no patient {patient_id!r} in your team")
    return patient


PatientId = Annotated[str, Path(min_length=1, max_length=128, description="Patient id")]


def readable_patient(request: Request, patient_id: PatientId, db: DB, user: Reader) -> PatientRecord:
    """The patient, if the caller's team cares for them; records the read in the audit log."""
    patient = team_patient(db, user, patient_id)
    audit(db, user, "read", resource_of(request), patient.patient_id)
    return patient


def writable_patient(patient_id: PatientId, db: DB, user: Writer) -> PatientRecord:
    return team_patient(db, user, patient_id)


ReadablePatient = Annotated[PatientRecord, Depends(readable_patient)]
WritablePatient = Annotated[PatientRecord, Depends(writable_patient)]
