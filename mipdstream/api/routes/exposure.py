"""Exposure over the course (the target metric per window and per day, past and forecast) and
the printable exposure report."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from mipdstream.api import exposure, report
from mipdstream.api.auth import DB, Live, ReadablePatient
from mipdstream.api.problems import ProblemError, problem_responses
from mipdstream.api.routes.patients import TargetOut, target_out

router = APIRouter(prefix="/api/v1", tags=["exposure"], responses=problem_responses(401, 403, 404, 422))


class WindowOut(BaseModel):
    start_s: float
    end_s: float
    past: bool = Field(description="The window ended before the posterior's time: its numbers are the posterior's estimate of what happened.")
    pta: float = Field(description="P(metric in the target range) in this window.")
    mean: float
    quantiles: list[float] = Field(description="5, 25, 50, 75, 95 % quantiles of the metric.")


class ExposureSeries(BaseModel):
    label: str = Field(description="current | recommended")
    recommendation_id: str | None = None
    windows: list[WindowOut]


class ExposureOut(BaseModel):
    patient_id: str
    metric: str = Field(description="What is shown, in words, e.g. 'AUC24' or 'fraction of the day with INR in 2-3'.")
    unit: str
    expected: bool = Field(description="The metric is a fraction of time: read its mean.")
    low: float = Field(description="Range of the metric (for a time-in-range metric: the fraction asked for).")
    high: float
    target: TargetOut | None
    window_h: float
    series: list[ExposureSeries]


def _series(label: str, rec_id, result, patient, course) -> ExposureSeries:
    windows = [WindowOut(start_s=patient.origin_s + 3600 * s, end_s=patient.origin_s + 3600 * (s + course.window_h),
                         past=bool(s + course.window_h <= course.posterior_h + 1e-9), pta=float(result.pta[i]), mean=float(result.mean[i]),
                         quantiles=[float(q) for q in result.quantiles[i]])
               for i, s in enumerate(course.starts_h)]
    return ExposureSeries(label=label, recommendation_id=rec_id, windows=windows)


def exposure_out(live, db, patient, horizon_h: float, daily: bool) -> ExposureOut:
    course = exposure.course_exposure(live, patient, horizon_h, daily)
    if course is None:
        raise ProblemError(422, "this patient's model has no dosing policy, so no exposure metric")
    series = [_series("current", None, course.current, patient, course)]
    if course.recommended is not None:
        series.append(_series("recommended", course.recommendation_id, course.recommended, patient, course))
    return ExposureOut(patient_id=patient.patient_id, metric=course.label, unit=course.unit, expected=course.expected,
                       low=course.target.low, high=course.target.high, target=target_out(db.target(patient.patient_id), patient.model),
                       window_h=course.window_h, series=series)


@router.get("/patients/{patient_id}/exposure", response_model=ExposureOut,
            summary="The target metric per window (or per day) from the first dose, past and forecast")
def get_exposure(patient: ReadablePatient, live: Live, db: DB,
                 horizon_h: Annotated[float, Query(gt=0, le=504)] = 48.0,
                 daily: Annotated[bool, Query(description="Per day (AUC24, the day's time in range, the day's lowest ANC) "
                                                          "instead of the target's own window.")] = True) -> ExposureOut:
    return exposure_out(live, db, patient, horizon_h, daily)


@router.get("/patients/{patient_id}/report", response_class=HTMLResponse,
            summary="Printable exposure report (HTML with print styles) for a period",
            responses={200: {"content": {"text/html": {}}, "description": "The report"}})
def get_report(patient: ReadablePatient, live: Live, db: DB,
               start_s: Annotated[float | None, Query(ge=0, le=4.2e9, description="Start of the period, epoch s; default the first dose.")] = None,
               end_s: Annotated[float | None, Query(ge=0, le=4.2e9, description="End of the period, epoch s; default now.")] = None) -> HTMLResponse:
    end = time.time() if end_s is None else end_s
    if start_s is not None and start_s >= end:
        raise ProblemError(422, "start_s must be before end_s")
    return HTMLResponse(report.render(live, db, patient, start_s, end), headers={"Cache-Control": "no-store"})
