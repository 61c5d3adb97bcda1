"""Posterior summaries and forecasts for the API: current posterior (or the prior before the
first event), parameter quantiles, predictive bands under a regimen, probability out of target."""

from __future__ import annotations

import functools
import json
import threading

import numpy as np

from assimilation import Dose, load_model
from assimilation.online import Posterior, init, particles, predict
from dosing_policy.attainment import weighted_quantiles
from mipdstream.service import regimens, targets
from mipdstream.service.assimilator import patient_seed
from mipdstream.service.events import dose_event
from mipdstream.service.live import LiveService
from mipdstream.service.policy import current_regimen
from mipdstream.service.sampling import next_sample  # noqa: F401  (the API's next-sample route)
from mipdstream.service.state_db import PatientRecord, RecommendationRecord, RegimenRecord, TargetRecord

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_DOSES = 512
DOSE_SLOTS = 8  # future doses in one forecast; a longer regimen shortens the horizon (see the forecast route)
_prior_lock = threading.Lock()
_predict_lock = threading.Lock()  # one forecast at a time: jitted kernels, 2-core machines


@functools.lru_cache(maxsize=256)
def _prior(model: str, covariates_json: str, seed: int, n_particles: int, method: str) -> Posterior:
    return init(model, json.loads(covariates_json), seed, n_particles, method)


def current_posterior(live: LiveService, patient: PatientRecord) -> tuple[Posterior, float | None]:
    """(posterior, its time in model h); the prior (time None) before the patient's first event."""
    found = live.assimilator.posterior(patient.patient_id)
    if found is not None and np.isfinite(found[1]):
        return found
    return prior_of(live, patient), None


def parameter_quantiles(posterior: Posterior) -> dict[str, list[float]]:
    """Quantiles (at :data:`LEVELS`) of each population parameter, natural units."""
    sample = particles(posterior)
    weights = np.exp(sample.log_weights - np.max(sample.log_weights))
    values = np.exp(sample.log_params[:, : posterior.model.population.n_parameters]).T  # (p, N)
    quantiles = np.asarray(weighted_quantiles(values, weights / weights.sum(), LEVELS), np.float64)
    return {name: quantiles[i].tolist() for i, name in enumerate(posterior.model.population.names)}


def prior_of(live: LiveService, patient: PatientRecord) -> Posterior:
    """The patient's prior (their covariates at the origin), as the filter starts from it."""
    filters = live.assimilator.filters
    with _prior_lock:
        return _prior(patient.model, json.dumps(patient.covariates, sort_keys=True),
                      patient_seed(filters.seed, patient.patient_id), filters.n_particles, filters.method)


def given_doses(live: LiveService, patient: PatientRecord) -> list[Dose]:
    """The doses given so far (administered), model h, time order."""
    events = (dose_event(patient, d) for d in live.ingest.store.doses(patient.patient_id))
    return sorted((e.event for e in events if e is not None), key=lambda d: d.time)


def current_regimen_record(live: LiveService, patient: PatientRecord, now_s: float | None = None) -> RegimenRecord | None:
    """The current regimen (:func:`mipdstream.service.regimens.current`): the one the team set
    after the last dose, else the one the doses given follow (as the dosing policy reads them)."""
    import time

    now_s = time.time() if now_s is None else now_s
    doses = given_doses(live, patient)
    policy = targets.drug_policy(patient.model)
    inferred = None
    if doses:
        now_h = patient.hours(now_s)
        if policy is not None:
            inferred = current_regimen(doses, now_h, policy.grid.step, policy.bolus, policy.usual_interval,
                                       len(policy.space.intervals) == 1)
        else:
            inferred = current_regimen(doses, now_h)
    return regimens.current(patient, live.db.regimen(patient.patient_id), doses, now_s, inferred)


GRID = 512  # every forecast is computed on this many times (then cut): one compiled shape


def _padded_times(times_h: np.ndarray) -> np.ndarray:
    return np.concatenate([times_h, np.full(GRID - len(times_h), times_h[-1])])


def _padded_doses(doses: list[Dose], at_h: float) -> list[Dose]:
    """Zero-amount doses up to :data:`DOSE_SLOTS` (one compiled shape: compile time grows fast with slots)."""
    if len(doses) > DOSE_SLOTS:
        raise ValueError(f"at most {DOSE_SLOTS} future doses per forecast")
    return doses + [Dose(at_h, 0.0, None, 0.0)] * (DOSE_SLOTS - len(doses))


_bands: dict[tuple, dict[str, list[float]]] = {}
_bands_lock = threading.Lock()


def cached_band(key: tuple, posterior: Posterior, times_h: np.ndarray, doses: list[Dose], analyte: int = 0) -> dict[str, list[float]]:
    """:func:`band`, remembered under ``key`` (which must identify the posterior: patient and its time)."""
    full_key = (*key, tuple(doses), times_h[0], times_h[-1], len(times_h), analyte)
    with _bands_lock:
        found = _bands.get(full_key)
    if found is None:
        found = band(posterior, times_h, doses, analyte)
        with _bands_lock:
            if len(_bands) >= 256:
                _bands.pop(next(iter(_bands)))
            _bands[full_key] = found
    return found


def band(posterior: Posterior, times_h: np.ndarray, doses: list[Dose], analyte: int = 0) -> dict[str, list[float]]:
    n = len(times_h)
    if n > GRID:
        raise ValueError(f"at most {GRID} forecast times")
    with _predict_lock:
        forecast = predict(posterior, _padded_times(times_h), _padded_doses(doses, float(times_h[-1])), analyte, levels=LEVELS)
    q = np.asarray(forecast.quantiles)[0, :, :n]
    return {"mean": np.asarray(forecast.mean)[0, :n].tolist(), "p05": q[0].tolist(), "p25": q[1].tolist(),
            "p50": q[2].tolist(), "p75": q[3].tolist(), "p95": q[4].tolist()}


def of_regimen(patient: PatientRecord, regimen: RegimenRecord | RecommendationRecord, from_h: float, until_h: float) -> list[Dose]:
    return regimens.doses_between(patient, regimen, from_h, until_h, MAX_DOSES)


def probability_out_of_target(posterior: Posterior, time_h: float, target: TargetRecord) -> float:
    """P(true level of the first analyte outside [low, high]) at ``time_h``, from the predictive samples."""
    with _predict_lock:
        forecast = predict(posterior, np.array([time_h]), (), 0, levels=(0.5,))
    samples = np.asarray(forecast.samples)[0, :, 0]
    return float(np.mean((samples < target.low) | (samples > target.high)))


def analyte_names(model_name: str) -> list[str]:
    return [a.name for a in load_model(model_name).analytes]


