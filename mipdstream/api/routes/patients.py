"""Patients of the caller's team: create, read, covariates, target range; the models on offer.

Covariates are typed by the model (``GET /api/v1/models``: unit and plausible range, or the
allowed levels); a value the model cannot use is a 422 that names the covariate and what it
allows. Every patient of a drug with a dosing policy has a target: the drug's cited default
unless the team set another range of the same quantity."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from assimilation import CovariateError, load_model
from assimilation.covariates import describe as describe_covariate
from assimilation.model import BUILTIN_MODELS
from mipdstream.api.auth import DB, CurrentUser, Live, ReadablePatient, Reader, WritablePatient, Writer, audit, resource_of
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.service import targets
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


CovariateValue = float | str


class Target(BaseModel):
    low: float = Field(ge=0, le=1e6, description="Lower end of the range, in `unit`.")
    high: float = Field(gt=0, le=1e6)
    unit: str = Field("mg/L", min_length=1, max_length=32, description="UCUM unit: the drug's target unit (GET /api/v1/models).")

    @model_validator(mode="after")
    def _ordered(self) -> "Target":
        if self.high <= self.low:
            raise ValueError("high must be above low")
        return self


class TargetOut(BaseModel):
    quantity: str = Field(description="What the range is of: e.g. AUC24, INR, ANC nadir (or 'level' for a user model's first analyte).")
    low: float
    high: float
    unit: str = Field(description="UCUM unit.")
    source: Literal["default", "team"] = Field(description="default: the drug's cited target; team: set by the care team.")
    citation: str = Field(description="Where the default comes from (for a team's range: the default's source).")


class PatientIn(BaseModel):
    patient_id: str = Field(pattern=PATIENT_ID)
    model: str = Field(description="A model name from GET /api/v1/models.", min_length=1, max_length=64)
    covariates: dict[str, CovariateValue] = Field(default_factory=dict, description="Covariate values as the model declares them, e.g. {'WT': 70, 'CYP2C9': '*1/*3'}.")
    origin_s: float | None = Field(None, ge=0, le=4.2e9, description="Model time zero (epoch s); default now. Models with a sensor state (vancomycin's ISF gain) take it as the sensor's insertion.")
    target: Target | None = Field(None, description="The team's own range; default the drug's cited target.")


class CovariateChangeIn(BaseModel):
    at_s: float = Field(ge=0, le=4.2e9, description="From when the new values hold (epoch s), e.g. when the creatinine was drawn.")
    values: dict[str, CovariateValue] = Field(min_length=1, description="The covariates that change, e.g. {'CRCL': 35}.")


class CovariateChangeOut(BaseModel):
    at_s: float
    values: dict[str, CovariateValue]


class PatientOut(BaseModel):
    patient_id: str
    team: str
    model: str
    covariates: dict[str, CovariateValue] = Field(description="The covariates from the patient's origin on.")
    covariate_changes: list[CovariateChangeOut] = Field(default_factory=list, description="Later changes, in time order.")
    origin_s: float
    analytes: list[str]
    units: list[str]
    target: TargetOut | None = Field(None, description="None only for a user model without a dosing policy and no team range.")


class CovariateOut(BaseModel):
    name: str
    type: Literal["continuous", "categorical"]
    description: str = ""
    unit: str | None = Field(None, description="UCUM unit (continuous).")
    low: float | None = Field(None, description="Plausible range (continuous): values outside are refused.")
    high: float | None = None
    studied: list[float] | None = Field(None, description="The range of the data the model was built on, where the source reports it.")
    levels: list[CovariateValue] | None = Field(None, description="Allowed levels (categorical).")
    aliases: dict[str, CovariateValue] | None = Field(None, description="Other spellings of a level (categorical).")


class AnalyteOut(BaseModel):
    name: str
    unit: str
    code: str | None = Field(None, description="Wire analyte code (LOINC or x-mipd-).")
    codes: list[str] = Field(default_factory=list, description="Every wire code read as this analyte, ``code`` first "
                             "(e.g. point-of-care INR 34714-6 beside laboratory 6301-6).")

    @classmethod
    def of(cls, analyte) -> "AnalyteOut":
        return cls(name=analyte.name, unit=analyte.unit, code=analyte.code, codes=list(analyte.codes))


class ModelOut(BaseModel):
    name: str
    drug: str | None = None
    covariates: list[CovariateOut] = Field(default_factory=list)
    analytes: list[AnalyteOut] = Field(default_factory=list)
    default_target: TargetOut | None = None


class CovariatesIn(BaseModel):
    covariates: dict[str, CovariateValue]


def target_out(stored: TargetRecord | None, model_spec: str) -> TargetOut | None:
    found = targets.patient_target(stored, model_spec)
    if found is None:
        return None
    c = found.clinical
    return TargetOut(quantity=c.quantity, low=c.low, high=c.high, unit=c.unit, source=found.source, citation=c.source)


def patient_out(db: ServiceDB, patient: PatientRecord) -> PatientOut:
    name, analytes, units = model_info(patient.model)
    return PatientOut(
        patient_id=patient.patient_id, team=patient.team, model=name, covariates=patient.covariates,
        covariate_changes=[CovariateChangeOut(at_s=c.at_s, values=c.values) for c in patient.covariate_changes],
        origin_s=patient.origin_s, analytes=list(analytes), units=list(units),
        target=target_out(db.target(patient.patient_id), patient.model),
    )


def model_out(name: str, spec: str) -> ModelOut:
    model = load_model(spec)
    declared = [CovariateOut(**describe_covariate(c)) for c in model.covariates]
    if not declared:  # a quick user model: the covariates its effects name, untyped
        declared = [CovariateOut(name=n, type="continuous") for n in model.covariate_names]
    return ModelOut(name=name, drug=targets.drug_of(spec), covariates=declared,
                    analytes=[AnalyteOut.of(a) for a in model.analytes],
                    default_target=target_out(None, spec))


def check_covariates(spec: str, covariates: dict, *, partial: bool = False) -> dict:
    """The covariates as the model computes with them, or a 422 naming the covariate and what it allows."""
    from assimilation.parameters import prior_mean

    model = load_model(spec)
    try:
        checked = model.check_covariates(covariates, partial=partial)
    except CovariateError as error:
        raise ProblemError(422, str(error)) from None
    if partial:
        return checked
    with np.errstate(all="ignore"):
        mean = prior_mean(model.population, checked)
    if not np.all(np.isfinite(mean)):
        raise ProblemError(422, "covariates do not fit the model: the prior is not finite for these values")
    return checked


def check_target(spec: str, target: Target) -> None:
    default = targets.patient_target(None, spec)
    if default is not None and target.unit != default.clinical.unit:
        raise ProblemError(422, f"the target of this model is a range of {default.clinical.quantity} in {default.clinical.unit}, "
                                f"not in {target.unit}")


@router.get("/models", response_model=list[ModelOut], summary="Models a patient can be monitored with: covariates, analytes, default target")
def list_models(user: CurrentUser) -> list[ModelOut]:
    return [model_out(name, spec) for name, spec in sorted(available_models().items())]


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
    covariates = check_covariates(spec, body.covariates)
    if body.target is not None:
        check_target(spec, body.target)
    patient = PatientRecord(body.patient_id, spec, covariates, body.origin_s or time.time(), user.team)
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
    covariates = check_covariates(patient.model, body.covariates)
    updated = PatientRecord(patient.patient_id, patient.model, covariates, patient.origin_s, patient.team)
    db.add_patient(updated)
    live.assimilator.reconfigure(patient.patient_id)
    audit(db, user, "set-covariates", f"PUT /api/v1/patients/{patient.patient_id}/covariates", patient.patient_id,
          before=patient.covariates, after=covariates)
    return patient_out(db, updated)


@router.post("/patients/{patient_id}/covariate-changes", response_model=PatientOut, status_code=201,
             summary="Covariates that change from a given time on (e.g. a new creatinine clearance)")
def add_covariate_change(body: CovariateChangeIn, patient: WritablePatient, user: Writer, db: DB, live: Live) -> PatientOut:
    """Unlike PUT .../covariates (a correction: the whole history is refitted on the new
    prior), a change holds from ``at_s`` on: what the filter learnt about the patient carries
    over and only the covariate effects change from then on."""
    if body.at_s < patient.origin_s:
        raise ProblemError(422, "a covariate change before the patient's origin is a correction: use PUT .../covariates")
    values = check_covariates(patient.model, body.values, partial=True)
    check_covariates(patient.model, {**patient.covariates_at(patient.hours(body.at_s)), **values})
    db.add_covariate_change(patient.patient_id, CovariateChangeRecord(body.at_s, values))
    live.assimilator.reconfigure(patient.patient_id)  # replayed with the change in its place
    audit(db, user, "add-covariate-change", f"POST /api/v1/patients/{patient.patient_id}/covariate-changes", patient.patient_id,
          at_s=body.at_s, values=values)
    return patient_out(db, db.patient(patient.patient_id))


@router.put("/patients/{patient_id}/target", response_model=PatientOut, summary="Set the therapeutic range")
def set_target(body: Target, patient: WritablePatient, user: Writer, db: DB) -> PatientOut:
    check_target(patient.model, body)
    db.set_target(TargetRecord(patient.patient_id, body.low, body.high, body.unit))
    audit(db, user, "set-target", f"PUT /api/v1/patients/{patient.patient_id}/target", patient.patient_id,
          target=json.loads(body.model_dump_json()))
    return patient_out(db, patient)
