"""A patient's exposure over the course, per target window and per day, for the patient page
and the exposure report: past windows from the posterior replayed through the doses given
(:mod:`dosing_policy.exposure_history`), future ones under the current and the recommended
regimen.

Per day, the daily form of the patient's target: AUC24 itself for vancomycin; for warfarin the
day's INR time in range (its mean is the expected fraction of the day in range); for docetaxel
the day's lowest ANC against the nadir range.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from assimilation import Dose
from assimilation.online import particles
from dosing_policy.exposure_history import WindowExposure, exposure_by_window
from dosing_policy.metrics import AreaUnderCurve, Nadir, Target, TimeInRange
from mipdstream.api import forecasting
from mipdstream.service import regimens, targets
from mipdstream.service.live import LiveService
from mipdstream.service.state_db import PatientRecord, RecommendationRecord, RegimenRecord

MAX_WINDOWS = 64
_lock = threading.Lock()  # jitted kernels, 2-core machines: one at a time
_cache: dict[tuple, "CourseExposure"] = {}


class CourseExposure(NamedTuple):
    target: Target
    label: str  # what the metric is, in words
    unit: str
    expected: bool  # the metric is a fraction (time in range): show its mean beside the quantiles
    starts_h: np.ndarray
    window_h: float
    posterior_h: float  # windows ending before this are past (all their data are in)
    current: WindowExposure
    recommended: WindowExposure | None
    recommendation_id: str | None


def daily_target(target: Target) -> tuple[Target, str, bool]:
    """(the daily form of ``target``, its label, whether its mean is what to read)."""
    metric = target.metric
    if isinstance(metric, AreaUnderCurve):
        return target._replace(metric=AreaUnderCurve(24.0, "auc24")), "AUC over the day", False
    if hasattr(metric, "ceiling"):
        return (Target(TimeInRange(metric.low, metric.high, 24.0), 0.999, 1.0, analyte=target.analyte, source=target.source),
                f"fraction of the day with {str(target.analyte).upper()} in {metric.low:g}-{metric.high:g}", True)
    if isinstance(metric, Nadir):
        return target._replace(metric=Nadir(24.0)), f"lowest {str(target.analyte).upper()} of the day", False
    return target, metric.name, False


def _window_starts(first_h: float, until_h: float, window: float) -> np.ndarray:
    n = int(np.clip(np.ceil((until_h - first_h) / window), 1, MAX_WINDOWS))
    return first_h + window * np.arange(n)


def course_exposure(live: LiveService, patient: PatientRecord, horizon_h: float, daily: bool) -> CourseExposure | None:
    """Exposure per window from the first dose to ``horizon_h`` after the posterior's time, or
    None for a model without a dosing policy."""
    found = targets.patient_target(live.db.target(patient.patient_id), patient.model)
    if found is None or found.search_target is None:
        return None
    target, label, expected = daily_target(found.search_target) if daily else (found.search_target, found.clinical.quantity, False)
    posterior, time_h = forecasting.current_posterior(live, patient)
    now_h = max(time_h or 0.0, 0.0)
    given = forecasting.given_doses(live, patient)
    first_h = given[0].time if given else now_h
    window = float(target.metric.window)
    starts = _window_starts(first_h, now_h + horizon_h, window)
    end_h = float(starts[-1] + window)
    current = forecasting.current_regimen_record(live, patient)
    open_ = live.db.recommendations(patient.patient_id, status="open", limit=1)
    recommended = open_[0] if open_ else None
    key = (patient.patient_id, patient.model, time_h, tuple(starts), window, daily, _regimen_key(current), _regimen_key(recommended),
           len(given), found.clinical)
    with _lock:
        if key in _cache:
            return _cache[key]
        sample = particles(posterior)

        def under(regimen: RegimenRecord | RecommendationRecord | None) -> WindowExposure:
            planned = [] if regimen is None else regimens.doses_between(patient, regimen, now_h, end_h)
            planned_from = min((d.time for d in planned), default=end_h)
            doses = [d for d in given if d.time < planned_from] + planned
            return exposure_by_window(posterior.model, sample.log_params, sample.log_weights, doses, target, starts)

        result = CourseExposure(target, label, target.metric.unit, expected, starts, window, now_h, under(current),
                                None if recommended is None else under(recommended),
                                None if recommended is None else recommended.recommendation_id)
        if len(_cache) > 256:
            _cache.pop(next(iter(_cache)))
        _cache[key] = result
    return result


def _regimen_key(r) -> tuple | None:
    if r is None:
        return None
    return (r.amount_mg, r.interval_h, r.duration_h, r.start_s, r.loading_amount_mg, r.loading_duration_h)


def doses_in(doses: list[Dose], start_h: float, end_h: float) -> list[Dose]:
    return [d for d in doses if start_h <= d.time < end_h]
