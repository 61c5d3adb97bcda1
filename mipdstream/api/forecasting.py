"""Posterior summaries and forecasts for the API: current posterior (or the prior before the
first event), parameter quantiles, predictive bands under a regimen, probability out of target."""

from __future__ import annotations

import functools
import threading

import numpy as np

from assimilation import Dose, load_model
from assimilation.online import Posterior, init, particles, predict
from mipdstream.service.assimilator import patient_seed
from mipdstream.service.live import LiveService
from mipdstream.service.sampling import next_sample  # noqa: F401  (the API's next-sample route)
from mipdstream.service.state_db import PatientRecord, RecommendationRecord, RegimenRecord, TargetRecord

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_DOSES = 512
DOSE_SLOTS = 8  # future doses in one forecast; a longer regimen shortens the horizon (see the forecast route)
_prior_lock = threading.Lock()
_predict_lock = threading.Lock()  # one forecast at a time: jitted kernels, 2-core machines


@functools.lru_cache(maxsize=256)
def _prior(model: str, covariates_json: str, seed: int, n_particles: int, method: str) -> Posterior:
    import json

    return init(model, json.loads(covariates_json), seed, n_particles, method)


def current_posterior(live: LiveService, patient: PatientRecord) -> tuple[Posterior, float | None]:
    """(posterior, its time in model h); the prior (time None) before the patient's first event."""
    found = live.assimilator.posterior(patient.patient_id)
    if found is not None and np.isfinite(found[1]):
        return found
    import json

    filters = live.assimilator.filters
    with _prior_lock:
        prior = _prior(patient.model, json.dumps(patient.covariates, sort_keys=True),
                       patient_seed(filters.seed, patient.patient_id), filters.n_particles, filters.method)
    return prior, None


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels=LEVELS) -> list[float]:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    return [float(values[order][min(np.searchsorted(cumulative, q), len(values) - 1)]) for q in levels]


def parameter_quantiles(posterior: Posterior) -> dict[str, list[float]]:
    sample = particles(posterior)
    weights = np.exp(sample.log_weights - np.max(sample.log_weights))
    values = np.exp(sample.log_params)
    return {name: weighted_quantiles(values[:, i], weights) for i, name in enumerate(posterior.model.population.names)}


def regimen_doses(patient: PatientRecord, amount_mg: float, interval_h: float, duration_h: float, start_s: float,
                  from_h: float, until_h: float) -> list[Dose]:
    """The regimen's doses that start in [from_h, until_h) (model h)."""
    first = patient.hours(start_s)
    k = max(0, int(np.ceil((from_h - first) / interval_h - 1e-9)))
    doses = []
    while (t := first + k * interval_h) < until_h and len(doses) < MAX_DOSES:
        doses.append(Dose(t, amount_mg, None, duration_h))
        k += 1
    return doses


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
    return regimen_doses(patient, regimen.amount_mg, regimen.interval_h, regimen.duration_h, regimen.start_s, from_h, until_h)


def probability_out_of_target(posterior: Posterior, time_h: float, target: TargetRecord) -> float:
    """P(true level of the first analyte outside [low, high]) at ``time_h``, from the predictive samples."""
    with _predict_lock:
        forecast = predict(posterior, np.array([time_h]), (), 0, levels=(0.5,))
    samples = np.asarray(forecast.samples)[0, :, 0]
    return float(np.mean((samples < target.low) | (samples > target.high)))


def analyte_names(model_name: str) -> list[str]:
    return [a.name for a in load_model(model_name).analytes]


