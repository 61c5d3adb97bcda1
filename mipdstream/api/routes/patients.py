"""Patients of the caller's team: create, read, covariates, target range; the models on offer."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from assimilation import load_model
from assimilation.model import BUILTIN_MODELS
from mipdstream.api.auth import DB, CurrentUser, Live, ReadablePatient, Reader, WritablePatient, Writer, audit, resource_of
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service.state_db import CovariateChangeRecord, PatientRecord, ServiceDB, TargetRecord

router = APIRouter(prefix="/api/v1", tags=["patients"], responses=problem_responses(401, 403, 404, 409, 422))

PATIENT_ID = r"^[A-Za-z0-9._:-]{1,128}$"
LIBRARY = Path(__file__).resolve().parents[3] / "assimilation" / "models"
NOT_MODELS = {"__init__", "exposure", "covariate_effects"}


def available_models() -> dict[str, str]:
    """Model name -> what ``load_model`` takes (a built-in name or a library file). Nothing else may be loaded."""
    library = {p.stem: str(p) for p in sorted(LIBRARY.glob("*.py")) if p.stem not in NOT_MODELS}
    return {**library, **{name: name for name in BUILTIN_MODELS}}


@functools.lru_cache(maxsize=64)
def model_info(spec: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(name, analyte names, analyte units) of a model."""
    model = load_model(spec)
    return model.name, tuple(a.name for a in model.analytes), tuple(getattr(a, "unit", "") or "" for a in model.analytes)


class Target(BaseModel):
    low: float = Field(ge=0, le=1e6, description="Lower end of the therapeutic range of the first analyte.")
    high: float = Field(gt=0, le=1e6)
    unit: str = Field("mg/L", min_length=1, max_length=32, description="UCUM unit.")

    @model_validator(mode="after")
    def _ordered(self) -> "Target":
        if self.high <= self.low:
            raise ValueError("high must be above low")
        return self


class PatientIn(BaseModel):
    patient_id: str = Field(pattern=PATIENT_ID)
    model: str = Field(description="A model name from GET /api/v1/models.", min_length=1, max_length=64)
    covariates: dict[str, float] = Field(default_factory=dict, description="Covariate values, e.g. {'WT': 70}.")
    origin_s: float | None = Field(None, ge=0, le=4.2e9, description="Model time zero (epoch s); default now. Models with a sensor state (vancomycin's ISF gain) take it as the sensor's insertion.")
    target: Target | None = None


class CovariateChangeIn(BaseModel):
    at_s: float = Field(ge=0, le=4.2e9, description="From when the new values hold (epoch s), e.g. when the creatinine was drawn.")
    values: dict[str, float] = Field(min_length=1, description="The covariates that change, e.g. {'CRCL': 35}.")


class CovariateChangeOut(BaseModel):
    at_s: float
    values: dict[str, float]


class PatientOut(BaseModel):
    patient_id: str
    team: str
    model: str
    covariates: dict[str, float] = Field(description="The covariates from the patient's origin on.")
    covariate_changes: list[CovariateChangeOut] = Field(default_factory=list, description="Later changes, in time order.")
    origin_s: float
    analytes: list[str]
    units: list[str]
    target: Target | None = None


class ModelOut(BaseModel):
    name: str


class CovariatesIn(BaseModel):
    covariates: dict[str, float]


def patient_out(db: ServiceDB, patient: PatientRecord) -> PatientOut:
    name, analytes, units = model_info(patient.model)
    target = db.target(patient.patient_id)
    return PatientOut(
        patient_id=patient.patient_id, team=patient.team, model=name, covariates=patient.covariates,
        covariate_changes=[CovariateChangeOut(at_s=c.at_s, values=c.values) for c in patient.covariate_changes],
        origin_s=patient.origin_s, analytes=list(analytes), units=list(units),
        target=None if target is None else Target(low=target.low, high=target.high, unit=target.unit),
    )


def check_covariates(spec: str, covariates: dict[str, float]) -> None:
    from assimilation.parameters import prior_mean

    try:
        with np.errstate(all="ignore"):
            mean = prior_mean(load_model(spec).population, covariates)
    except Exception as error:  # a missing or unusable covariate
        raise ProblemError(422, f"covariates do not fit the model: {error}") from None
    if not np.all(np.isfinite(mean)):
        raise ProblemError(422, "covariates do not fit the model: the prior is not finite for these values")


@router.get("/models", response_model=list[ModelOut], summary="Models a patient can be monitored with")
def list_models(user: CurrentUser) -> list[ModelOut]:
    return [ModelOut(name=name) for name in sorted(available_models())]


@router.get("/patients", response_model=list[PatientOut], summary="The team's patients")
def list_patients(request: Request, user: Reader, db: DB) -> list[PatientOut]:
    audit(db, user, "read", resource_of(request))
    return [patient_out(db, p) for p in db.patients() if p.team == user.team]


@router.post("/patients", response_model=PatientOut, status_code=201, summary="Start monitoring a patient")
def create_patient(body: PatientIn, user: Writer, db: DB) -> PatientOut:
    spec = available_models().get(body.model)
    if spec is None:
        raise ProblemError(422, f"unknown model {body.model!r}; see GET /api/v1/models")
    if db.patient(body.patient_id) is not None:
        raise ProblemError(409, f"patient id {body.patient_id!r} is in use")
    check_covariates(spec, body.covariates)
    patient = PatientRecord(body.patient_id, spec, body.covariates, body.origin_s or time.time(), user.team)
    db.add_patient(patient)
    if body.target is not None:
        db.set_target(TargetRecord(patient.patient_id, body.target.low, body.target.high, body.target.unit))
    audit(db, user, "create-patient", "POST /api/v1/patients", patient.patient_id, model=body.model)
    return patient_out(db, patient)


@router.get("/patients/{patient_id}", response_model=PatientOut, summary="One patient")
def get_patient(patient: ReadablePatient, db: DB) -> PatientOut:
    return patient_out(db, patient)


@router.put("/patients/{patient_id}/covariates", response_model=PatientOut,
            summary="Replace the covariates; the posterior is rebuilt on the new prior from the whole history")
def set_covariates(body: CovariatesIn, patient: WritablePatient, user: Writer, db: DB, live: Live) -> PatientOut:
    check_covariates(patient.model, body.covariates)
    updated = PatientRecord(patient.patient_id, patient.model, body.covariates, patient.origin_s, patient.team)
    db.add_patient(updated)
    live.assimilator.reconfigure(patient.patient_id)
    audit(db, user, "set-covariates", f"PUT /api/v1/patients/{patient.patient_id}/covariates", patient.patient_id,
          before=patient.covariates, after=body.covariates)
    return patient_out(db, updated)


@router.post("/patients/{patient_id}/covariate-changes", response_model=PatientOut, status_code=201,
             summary="Covariates that change from a given time on (e.g. a new creatinine clearance)")
def add_covariate_change(body: CovariateChangeIn, patient: WritablePatient, user: Writer, db: DB, live: Live) -> PatientOut:
    """Unlike PUT .../covariates (a correction: the whole history is refitted on the new
    prior), a change holds from ``at_s`` on: what the filter learnt about the patient carries
    over and only the covariate effects change from then on."""
    if body.at_s < patient.origin_s:
        raise ProblemError(422, "a covariate change before the patient's origin is a correction: use PUT .../covariates")
    check_covariates(patient.model, {**patient.covariates_at(patient.hours(body.at_s)), **body.values})
    db.add_covariate_change(patient.patient_id, CovariateChangeRecord(body.at_s, dict(body.values)))
    live.assimilator.reconfigure(patient.patient_id)  # replayed with the change in its place
    audit(db, user, "add-covariate-change", f"POST /api/v1/patients/{patient.patient_id}/covariate-changes", patient.patient_id,
          at_s=body.at_s, values=body.values)
    return patient_out(db, db.patient(patient.patient_id))


@router.put("/patients/{patient_id}/target", response_model=PatientOut, summary="Set the therapeutic range")
def set_target(body: Target, patient: WritablePatient, user: Writer, db: DB) -> PatientOut:
    db.set_target(TargetRecord(patient.patient_id, body.low, body.high, body.unit))
    audit(db, user, "set-target", f"PUT /api/v1/patients/{patient.patient_id}/target", patient.patient_id,
          target=json.loads(body.model_dump_json()))
    return patient_out(db, patient)
