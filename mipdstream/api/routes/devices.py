"""Devices and enrollment. Care teams see the devices enrolled to their patients; a device
vendor sees only its own devices and their conformance data (status, rejected messages)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from ingest.registry import Enrollment
from mipdstream.api.auth import DB, Live, ReadablePatient, Role, VendorOrTeam, WritablePatient, Writer, audit
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import ApiUser

router = APIRouter(prefix="/api/v1", tags=["devices"], responses=problem_responses(401, 403, 404, 409, 422))

DEVICE_ID = r"^[A-Za-z0-9._:-]{1,128}$"
EPOCH = {"ge": 0, "le": 4.2e9}


class DeviceIn(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID)
    kind: str = Field(min_length=1, max_length=64, description="e.g. poc-meter, biosensor, infusion-pump")
    vendor: str | None = Field(None, min_length=1, max_length=128, description="Ignored for device-vendor users (their own vendor).")


class DeviceOut(BaseModel):
    device_id: str
    kind: str
    vendor: str | None
    registered_at: float
    status: str | None = None
    status_received_at: float | None = None


class EnrollmentIn(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID)
    valid_from: float | None = Field(None, **EPOCH, description="Epoch s; default now.")
    valid_to: float | None = Field(None, **EPOCH)

    @model_validator(mode="after")
    def _ordered(self) -> "EnrollmentIn":
        if self.valid_to is not None and self.valid_to <= (self.valid_from or time.time()):
            raise ValueError("valid_to must be after valid_from")
        return self


class EnrollmentOut(BaseModel):
    device_id: str
    patient_id: str
    valid_from: float
    valid_to: float | None


class Rejection(BaseModel):
    received_at: float
    topic: str
    reason: str
    detail: str


class Conformance(BaseModel):
    device_id: str
    status: str | None
    status_received_at: float | None
    rejected: int = Field(description="Rejected messages (most recent 1000 considered).")
    reasons: dict[str, int]
    recent: list[Rejection]


def device_rows(live: LiveService) -> dict[str, tuple[str, str | None, float]]:
    """device id -> (kind, vendor, registered_at), read from the registry file."""
    connection = sqlite3.connect(f"file:{live.ingest.registry.path}?mode=ro", uri=True, timeout=30)
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in connection.execute("SELECT device_id, kind, vendor, registered_at FROM device")}
    finally:
        connection.close()


def device_out(live: LiveService, device_id: str, row: tuple[str, str | None, float]) -> DeviceOut:
    status = live.ingest.registry.status(device_id)
    return DeviceOut(device_id=device_id, kind=row[0], vendor=row[1], registered_at=row[2],
                     status=status[0] if status else None, status_received_at=status[1] if status else None)


def team_devices(live: LiveService, team: str | None) -> set[str]:
    patients = {p.patient_id for p in live.db.patients() if p.team == team}
    return {e.device_id for e in live.ingest.registry.enrollments() if e.patient_id in patients}


def visible_devices(live: LiveService, user: ApiUser) -> dict[str, tuple[str, str | None, float]]:
    rows = device_rows(live)
    if user.role == Role.device_vendor.value:
        return {d: row for d, row in rows.items() if row[1] is not None and row[1] == user.vendor}
    mine = team_devices(live, user.team)
    return {d: row for d, row in rows.items() if d in mine}


def open_enrollment_elsewhere(live: LiveService, device_id: str, team: str | None) -> Enrollment | None:
    """The device's current enrollment to a patient of another team, if any."""
    for e in live.ingest.registry.enrollments():
        if e.device_id == device_id and e.valid_to is None:
            patient = live.db.patient(e.patient_id)
            if patient is None or patient.team != team:
                return e
    return None


def enrollment_out(e: Enrollment) -> EnrollmentOut:
    return EnrollmentOut(device_id=e.device_id, patient_id=e.patient_id, valid_from=e.valid_from, valid_to=e.valid_to)


@router.get("/devices", response_model=list[DeviceOut], summary="Devices you may see")
def list_devices(user: VendorOrTeam, live: Live) -> list[DeviceOut]:
    return [device_out(live, d, row) for d, row in sorted(visible_devices(live, user).items())]


@router.post("/devices", response_model=DeviceOut, status_code=201, summary="Register a device (team admin or device vendor)")
def register_device(body: DeviceIn, user: VendorOrTeam, live: Live, db: DB) -> DeviceOut:
    if user.role not in (Role.team_admin.value, Role.device_vendor.value):
        raise ProblemError(403, "only a team admin or a device vendor registers devices")
    vendor = user.vendor if user.role == Role.device_vendor.value else body.vendor
    existing = device_rows(live).get(body.device_id)
    if existing is not None:
        other_vendor = user.role == Role.device_vendor.value and existing[1] != user.vendor
        other_team = user.role == Role.team_admin.value and open_enrollment_elsewhere(live, body.device_id, user.team)
        if other_vendor or other_team:
            raise ProblemError(409, f"device {body.device_id!r} is registered by someone else")
    live.ingest.registry.register_device(body.device_id, body.kind, vendor)
    audit(db, user, "register-device", "POST /api/v1/devices", device_id=body.device_id)
    return device_out(live, body.device_id, device_rows(live)[body.device_id])


@router.get("/devices/{device_id}/conformance", response_model=Conformance,
            summary="A device's last status and its rejected messages")
def conformance(device_id: str, user: VendorOrTeam, live: Live) -> Conformance:
    if device_id not in visible_devices(live, user):
        raise ProblemError(404, f"no device {device_id!r} that you may see")
    letters = live.ingest.store.dead_letters(device_id=device_id, limit=1000)
    status = live.ingest.registry.status(device_id)
    return Conformance(
        device_id=device_id, status=status[0] if status else None, status_received_at=status[1] if status else None,
        rejected=len(letters), reasons=dict(Counter(d.reason for d in letters)),
        recent=[Rejection(received_at=d.received_at, topic=d.topic, reason=d.reason, detail=d.detail) for d in letters[:20]],
    )


@router.get("/patients/{patient_id}/enrollments", response_model=list[EnrollmentOut], summary="The patient's devices over time")
def list_enrollments(patient: ReadablePatient, live: Live) -> list[EnrollmentOut]:
    return [enrollment_out(e) for e in live.ingest.registry.enrollments(patient.patient_id)]


@router.post("/patients/{patient_id}/enrollments", response_model=EnrollmentOut, status_code=201,
             summary="Attach a registered device to the patient")
def enroll(body: EnrollmentIn, patient: WritablePatient, user: Writer, live: Live, db: DB, request: Request) -> EnrollmentOut:
    if body.device_id not in device_rows(live):
        raise ProblemError(404, f"no registered device {body.device_id!r}")
    if open_enrollment_elsewhere(live, body.device_id, user.team) is not None:
        raise ProblemError(409, f"device {body.device_id!r} is enrolled to a patient of another team")
    enrollment = live.ingest.registry.enroll(body.device_id, patient.patient_id, body.valid_from or time.time(), body.valid_to)
    audit(db, user, "enroll-device", request.url.path, patient.patient_id, device_id=body.device_id)
    return enrollment_out(enrollment)
