"""The patient's current posterior (parameter quantiles, history of the predicted level) and
the forecast with 50 % and 90 % bands under the current and the recommended regimen."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mipdstream.api import forecasting
from mipdstream.api.auth import DB, Live, ReadablePatient
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.api.routes.patients import Target, model_info
from mipdstream.api.routes.recommendations import RegimenOut, regimen_out
from mipdstream.service.state_db import PatientRecord, ServiceDB

router = APIRouter(prefix="/api/v1", tags=["posterior"], responses=problem_responses(401, 403, 404, 422))

LEVELS = list(forecasting.LEVELS)


class SummaryPoint(BaseModel):
    analyte: str
    time_h: float
    epoch_s: float
    quantiles: list[float] = Field(description="Quantiles of the true level at `levels`.")


class PosteriorOut(BaseModel):
    patient_id: str
    source: Literal["posterior", "prior"] = Field(description="prior: no event assimilated yet.")
    time_h: float | None = Field(description="Model time of the last assimilated event (h since origin).")
    epoch_s: float | None
    method: str
    levels: list[float]
    parameters: dict[str, list[float]] = Field(description="Quantiles of each model parameter at `levels`.")
    history: list[SummaryPoint] = Field(description="Predicted level after each update, oldest first.")


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
    target: Target | None
    forecasts: list[RegimenForecast]


def _recommended(db: ServiceDB, patient: PatientRecord):
    open_ = db.recommendations(patient.patient_id, status="open", limit=1)
    return open_[0] if open_ else None


@router.get("/patients/{patient_id}/posterior", response_model=PosteriorOut, summary="Posterior summary")
def get_posterior(patient: ReadablePatient, live: Live, db: DB) -> PosteriorOut:
    posterior, time_h = forecasting.current_posterior(live, patient)
    return PosteriorOut(
        patient_id=patient.patient_id, source="prior" if time_h is None else "posterior", time_h=time_h,
        epoch_s=None if time_h is None else patient.origin_s + 3600 * time_h, method=posterior.method, levels=LEVELS,
        parameters=forecasting.parameter_quantiles(posterior),
        history=[SummaryPoint(analyte=a, time_h=t, epoch_s=e, quantiles=q) for a, t, e, q in db.summaries(patient.patient_id)],
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
    regimens = [("current", db.regimen(patient.patient_id), None)]
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
    target = db.target(patient.patient_id)
    return ForecastOut(
        patient_id=patient.patient_id, analyte=analytes[index], unit=units[index], times_h=times.tolist(),
        epoch_s=(patient.origin_s + 3600 * times).tolist(), levels=LEVELS,
        target=None if target is None else Target(low=target.low, high=target.high, unit=target.unit), forecasts=forecasts,
    )


class NextSample(BaseModel):
    time_h: float = Field(description="Suggested sample time, model h.")
    epoch_s: float
    metric: str = Field(description="The exposure metric whose uncertainty one more level reduces most, e.g. auc24.")
    variance_reduction: float = Field(description="Expected fraction of the metric's variance removed by that level.")
    regimen: str = Field(description="The regimen assumed until then.")


@router.get("/patients/{patient_id}/next-sample", response_model=NextSample,
            summary="When one more level would most reduce the uncertainty of the exposure (next 24 h)")
def get_next_sample(patient: ReadablePatient, live: Live, db: DB) -> NextSample:
    posterior, time_h = forecasting.current_posterior(live, patient)
    name, _, _ = model_info(patient.model)
    suggestion = forecasting.next_sample(patient, name, posterior, db.regimen(patient.patient_id),
                                         live.ingest.store.doses(patient.patient_id))
    if isinstance(suggestion, str):
        raise ProblemError(422, suggestion)
    when_h, metric, reduction, regimen = suggestion
    return NextSample(time_h=when_h, epoch_s=patient.origin_s + 3600 * when_h, metric=metric,
                      variance_reduction=reduction, regimen=regimen)
