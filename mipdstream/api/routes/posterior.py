"""The patient's current posterior (parameter quantiles, history of the predicted level) and
the forecast with 50 % and 90 % bands under the current and the recommended regimen."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from assimilation import load_model
from mipdstream.api import forecasting
from mipdstream.api.auth import DB, Live, ReadablePatient
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.api.routes.patients import AnalyteOut, Target, TargetOut, model_info, target_out
from mipdstream.api.routes.recommendations import RegimenOut, regimen_out
from mipdstream.service import targets
from mipdstream.service.state_db import PatientRecord, ServiceDB

router = APIRouter(prefix="/api/v1", tags=["posterior"], responses=problem_responses(401, 403, 404, 422))

LEVELS = list(forecasting.LEVELS)


class SummaryPoint(BaseModel):
    analyte: str = Field(description="Wire code of the analyte (or its model name when it has none).")
    analyte_name: str = Field(description="The model's name of the analyte, as in `analytes`.")
    time_h: float
    epoch_s: float
    quantiles: list[float] = Field(description="Quantiles of the true level at `levels`.")


class ParameterOut(BaseModel):
    name: str
    unit: str = Field(description="UCUM unit ('1': dimensionless; empty: not declared by the model).")
    posterior: list[float] = Field(description="Posterior 5 %, 50 %, 95 % quantiles, natural units.")
    prior: list[float] = Field(description="Prior 5 %, 50 %, 95 % quantiles (the patient's covariates at the origin).")
    fixed: bool = Field(description="No between-patient variability in the model: the data cannot move it.")


class PosteriorOut(BaseModel):
    patient_id: str
    source: Literal["posterior", "prior"] = Field(description="prior: no event assimilated yet.")
    time_h: float | None = Field(description="Model time of the last assimilated event (h since origin).")
    epoch_s: float | None
    method: str
    levels: list[float]
    parameters: dict[str, list[float]] = Field(description="Quantiles of each model parameter at `levels`.")
    parameter_table: list[ParameterOut] = Field(description="Each parameter's posterior beside its prior, with its unit.")
    analytes: list[AnalyteOut]
    history: list[SummaryPoint] = Field(description="Predicted level of each analyte after each update, oldest first.")


class Band(BaseModel):
    mean: list[float]
    p05: list[float]
    p25: list[float]
    p50: list[float]
    p75: list[float]
    p95: list[float]


class RegimenForecast(BaseModel):
    label: Literal["current", "recommended"]
    regimen: RegimenOut | None = Field(description="None: no regimen (no further doses).")
    recommendation_id: str | None = None
    band: Band


class ForecastOut(BaseModel):
    patient_id: str
    analyte: str
    unit: str
    times_h: list[float]
    epoch_s: list[float]
    levels: list[float]
    target: TargetOut | None = Field(description="The patient's target (of the drug's metric, e.g. AUC24: not always a level).")
    level_band: Target | None = Field(description="The range of this analyte's level that the target means, to draw on its chart "
                                                  "(INR 2-3, ANC 0.5-1.5); None when the target is not a level range (AUC24).")
    forecasts: list[RegimenForecast]


def level_band(db: ServiceDB, patient: PatientRecord, analyte_name: str) -> Target | None:
    """The level range of ``analyte_name`` that the patient's target means, if it is one."""
    found = targets.patient_target(db.target(patient.patient_id), patient.model)
    if found is None:
        return None
    c = found.clinical
    if found.policy is None:  # a user model: a team's range of its first analyte
        return Target(low=c.low, high=c.high, unit=c.unit) if analyte_name == load_model(patient.model).analytes[0].name else None
    target = found.search_target
    metric = target.metric
    if str(target.analyte) != analyte_name:
        return None
    if hasattr(metric, "ceiling"):  # a level band inside a time-in-range metric
        return Target(low=metric.low, high=metric.high, unit=c.unit)
    if metric.name == "nadir":
        return Target(low=c.low, high=c.high, unit=c.unit)
    return None


def _recommended(db: ServiceDB, patient: PatientRecord):
    open_ = db.recommendations(patient.patient_id, status="open", limit=1)
    return open_[0] if open_ else None


@router.get("/patients/{patient_id}/posterior", response_model=PosteriorOut, summary="Posterior summary")
def get_posterior(patient: ReadablePatient, live: Live, db: DB) -> PosteriorOut:
    posterior, time_h = forecasting.current_posterior(live, patient)
    model = posterior.model
    names = {a.code or a.name: a.name for a in model.analytes}
    quantiles, prior = forecasting.parameter_quantiles(posterior), forecasting.parameter_quantiles(forecasting.prior_of(live, patient))
    fixed = ~model.population.random_mask()
    table = [ParameterOut(name=name, unit=model.unit_of(name), posterior=[q[0], q[2], q[4]], prior=[prior[name][0], prior[name][2], prior[name][4]],
                          fixed=bool(fixed[i])) for i, (name, q) in enumerate(quantiles.items())]
    return PosteriorOut(
        patient_id=patient.patient_id, source="prior" if time_h is None else "posterior", time_h=time_h,
        epoch_s=None if time_h is None else patient.origin_s + 3600 * time_h, method=posterior.method, levels=LEVELS,
        parameters=quantiles, parameter_table=table,
        analytes=[AnalyteOut.of(a) for a in model.analytes],
        history=[SummaryPoint(analyte=a, analyte_name=names.get(a, a), time_h=t, epoch_s=e, quantiles=q)
                 for a, t, e, q in db.summaries(patient.patient_id)],
    )


@router.get("/patients/{patient_id}/forecast", response_model=ForecastOut,
            summary="Forecast bands (50 %, 90 %) under the current and the recommended regimen",
            description="At most 8 future doses per regimen are forecast: a longer regimen ends the horizon before its 9th dose.")
def get_forecast(
    patient: ReadablePatient, live: Live, db: DB,
    horizon_h: Annotated[float, Query(gt=0, le=336)] = 48.0,
    points: Annotated[int, Query(ge=2, le=400)] = 97,
    analyte: Annotated[str | None, Query(max_length=64, description="Analyte name; default the model's first.")] = None,
) -> ForecastOut:
    _, analytes, units = model_info(patient.model)
    index = 0 if analyte is None else (analytes.index(analyte) if analyte in analytes else -1)
    if index < 0:
        raise ProblemError(422, f"the model has no analyte {analyte!r}; it has {list(analytes)}")
    posterior, time_h = forecasting.current_posterior(live, patient)
    start = max(time_h or 0.0, 0.0)
    regimens = [("current", forecasting.current_regimen_record(live, patient), None)]
    if (rec := _recommended(db, patient)) is not None:
        regimens.append(("recommended", rec, rec.recommendation_id))
    end = start + horizon_h
    for _, regimen, _ in regimens:  # at most DOSE_SLOTS future doses: end before the next one
        doses = [] if regimen is None else forecasting.of_regimen(patient, regimen, start, end)
        if len(doses) > forecasting.DOSE_SLOTS:
            end = doses[forecasting.DOSE_SLOTS].time
    times = np.linspace(start, end, points)
    key = (patient.patient_id, patient.model, time_h, posterior.method)
    forecasts = []
    for label, regimen, rec_id in regimens:
        doses = [] if regimen is None else forecasting.of_regimen(patient, regimen, start, end)
        shown = None if regimen is None else regimen_out(patient.patient_id, regimen)
        forecasts.append(RegimenForecast(label=label, regimen=shown, recommendation_id=rec_id,
                                         band=Band(**forecasting.cached_band(key, posterior, times, doses, index))))
    return ForecastOut(
        patient_id=patient.patient_id, analyte=analytes[index], unit=units[index], times_h=times.tolist(),
        epoch_s=(patient.origin_s + 3600 * times).tolist(), levels=LEVELS,
        target=target_out(db.target(patient.patient_id), patient.model), level_band=level_band(db, patient, analytes[index]),
        forecasts=forecasts,
    )


class NextSample(BaseModel):
    available: bool = Field(description="False: no suggestion now (`reason` says why); the other fields are then None.")
    reason: str | None = Field(None, description="Why there is no suggestion, e.g. no dose recorded yet.")
    time_h: float | None = Field(None, description="Suggested sample time, model h.")
    epoch_s: float | None = None
    metric: str | None = Field(None, description="The exposure metric whose uncertainty one more level reduces most, e.g. auc24.")
    variance_reduction: float | None = Field(None, description="Expected fraction of the metric's variance removed by that level.")
    regimen: str | None = Field(None, description="The regimen assumed until then.")


@router.get("/patients/{patient_id}/next-sample", response_model=NextSample,
            summary="When one more level would most reduce the uncertainty of the exposure (next 24 h)")
def get_next_sample(patient: ReadablePatient, live: Live, db: DB) -> NextSample:
    posterior, time_h = forecasting.current_posterior(live, patient)
    name, _, _ = model_info(patient.model)
    suggestion = forecasting.next_sample(patient, name, posterior, forecasting.current_regimen_record(live, patient),
                                         live.ingest.store.doses(patient.patient_id))
    if isinstance(suggestion, str):  # a state of the patient, not an error of the request
        return NextSample(available=False, reason=suggestion)
    when_h, metric, reduction, regimen = suggestion
    return NextSample(available=True, time_h=when_h, epoch_s=patient.origin_s + 3600 * when_h, metric=metric,
                      variance_reduction=reduction, regimen=regimen)
