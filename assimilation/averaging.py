"""Bayesian model averaging (BMA) of several published models of one drug, per patient.

A patient is monitored with a *set* of models M_1..M_K (e.g. three vancomycin models from
different populations). Each keeps its own posterior (an :class:`~.online.Posterior`: PF,
EnKF or MAP), and the set keeps per patient the posterior model probabilities, updated on
every datum y_k from each member's one-step-ahead predictive:

    w̃_mk ∝ w_m,k−1 · p(y_k | y_1:k−1, M_m)                         (Bayes)
    w_mk  = (1 − ε_k) · w̃_mk + ε_k · π_m,   ε_k = floor · ω_k      (fixed share)

p(y_k | y_1:k−1, M_m) is the member filter's normalising constant for that reading: the
particle filter's log mean of the unnormalised weights, the EnKF's Gaussian predictive
N(g(y); h̄, s² + R), MAP's difference of Laplace evidences (``map_estimator.laplace_log_evidence``);
each filter accumulates it as ``state.log_evidence`` (MAP: from its objective and covariance).
π are the prior model weights, ω_k ∈ (0, 1] the reading's likelihood weight (1 for a plasma
level; min(1, Δt / persistence) for a dense sensor, the weight the filters temper its
likelihood by, so that a stream's pull towards π does not grow with its cadence).

Why a fixed share and not a hard cut or a cap on the log Bayes factor: it is the exact
Bayesian update of a model in which the patient's best-describing model may change with
probability ε_k at each datum (Herbster & Warmuth 1998; the "dynamic model averaging" of
Raftery, Kárný & Ettler 2010 with a switching prior instead of a forgetting exponent), so
every weight stays a posterior probability under a stated assumption; it bounds every weight
from below by ε_k π_m after each full datum, so one outlier cannot remove a model for good,
and a model that predicts better afterwards recovers at the rate of its Bayes factors. A cap
on the per-datum log Bayes factor also discards information in ordinary data whenever a
level discriminates strongly, and still lets a few moderate outliers drive a weight to zero.
docs/ASSIMILATION.md, "Model averaging", gives the figures.

The members' evidences must be densities of the same quantity: every member must read each
analyte on the same scale (all natural, or all log-normal, whose density is that of log y)
with the same persistence; :func:`init` checks it. Each member gets the patient's covariates
that it declares; a covariate no member uses is an error.

API (what the live service calls; arrays are per patient in the order given to :func:`init`)::

    averaged = init(models, covariates, key, n_particles, method="pf", prior_weights=None, floor=FLOOR, **options)
    averaged = update(averaged, events)            # doses, readings, covariate/sensor changes
    averaged.weights()                             # (patients, K) posterior model probabilities
    averaged.members[m]                            # member m's own online.Posterior
    forecast = predict(averaged, times, regimen=(), analyte=0, observation_noise=False)  # the mixture
    mix = particles(averaged, patient)             # the mixture as one weighted particle sample
    blob = to_bytes(averaged); averaged = from_bytes(blob)

``particles`` concatenates the members' particles with log-weights log w_m + the member's
normalised log-weights; the dosing policy takes it as it is (``dosing_policy.mixture``) when
the members share one state layout (parameter names, compartments, dynamics), as the
library's vancomycin models do. Update cost: one member update per reading round, so K
members cost about K times one model (benchmarks/assimilation.py, the ``bma`` row).
"""

from __future__ import annotations

import io
import json
from typing import NamedTuple, Sequence

import numpy as np

from . import map_estimator, online
from .covariates import CovariateError
from .events import CovariateChange, Reading, split_at
from .model import Model, load_model
from .parameters import as_covariate_list
from .particle_filter import Forecast

__all__ = ["FLOOR", "Averaged", "MixtureParticles", "init", "update", "predict", "particles", "fixed_share",
           "to_bytes", "from_bytes"]

FLOOR = 0.01
"""Default ε: the probability per full datum that the patient's best-describing model changes.
With three models and equal prior weights no weight falls below 0.0033 after a level, and a
model at that floor needs about 5 nats of Bayes factor to return to a half share."""

class Averaged(NamedTuple):
    """A model set's per-patient state.

    members: one :class:`~.online.Posterior` per model (same method, patients, options);
    log_weights: (K, P) log posterior model probabilities, normalised over K per patient;
    log_prior: (K,) log prior model weights π (normalised);
    floor: ε of the fixed share;
    evidence: (K, P) each member's log p(readings so far) when the weights were last updated;
    last_reading: (P, A) h, latest reading of each analyte (−inf: none), for ω_k.
    """

    members: tuple
    log_weights: np.ndarray
    log_prior: np.ndarray
    floor: float
    evidence: np.ndarray
    last_reading: np.ndarray

    @property
    def models(self) -> tuple[Model, ...]:
        return tuple(m.model for m in self.members)

    @property
    def n_patients(self) -> int:
        return self.members[0].n_patients

    def weights(self) -> np.ndarray:
        """(patients, K) posterior model probabilities."""
        return np.exp(self.log_weights).T


class MixtureParticles(NamedTuple):
    """One patient's mixture posterior as a weighted particle sample (the fields of
    :class:`~.online.PatientParticles`, plus where each particle comes from).

    log_weights are normalised over the whole mixture: log w_m + the member's own.
    member: (N_total,) index of the model each particle belongs to; model_weights: (K,) w_m."""

    log_params: np.ndarray
    amounts: np.ndarray
    log_weights: np.ndarray
    time: float
    member: np.ndarray
    model_weights: np.ndarray


# ----------------------------------------------------------------------------- checks


def _observation_scale(error) -> str:
    """'natural' if the error's Gaussian view is on y itself, else 'log' (log-normal)."""
    probe = np.array([0.5, 2.0, 7.0])
    return "natural" if np.allclose(np.asarray(error.transform(probe)), probe) else "log"


def _check_members(models: Sequence[Model]) -> None:
    """Every member explains the same analytes, on the same scale, with the same persistence."""
    if len(models) < 2:
        raise ValueError(f"model averaging needs at least two models, got {len(models)}")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model averaging: a model is given twice ({names})")
    first = models[0]
    for model in models[1:]:
        if [a.name for a in model.analytes] != [a.name for a in first.analytes]:
            raise ValueError(f"models {first.name!r} and {model.name!r} explain different analytes "
                             f"({[a.name for a in first.analytes]} vs {[a.name for a in model.analytes]}); "
                             "their evidences would weigh different data")
        for a, b in zip(first.analytes, model.analytes):
            if _observation_scale(a.error) != _observation_scale(b.error):
                raise ValueError(f"analyte {a.name!r}: model {first.name!r} reads it on the {_observation_scale(a.error)} scale, "
                                 f"{model.name!r} on the {_observation_scale(b.error)} scale; their evidences are densities "
                                 "of different quantities")
            if a.persistence_h != b.persistence_h:
                raise ValueError(f"analyte {a.name!r}: persistence {a.persistence_h} h in {first.name!r}, "
                                 f"{b.persistence_h} h in {model.name!r}; the models would weigh the same readings differently")


def _member_covariates(models: Sequence[Model], patients: list[dict]) -> list[list[dict]]:
    """Per model, per patient: the covariates that model declares, checked."""
    used = {name for model in models for name in model.covariate_names}
    out = [[] for _ in models]
    for i, values in enumerate(patients):
        unused = sorted(set(values) - used)
        if unused:
            raise CovariateError(unused[0], f"patient {i}: covariate {unused[0]!r} is used by none of the models "
                                            f"{[m.name for m in models]}")
        for k, model in enumerate(models):
            missing = [name for name in model.covariate_names if name not in values]
            if missing:
                raise CovariateError(missing[0], f"patient {i}: covariate {missing[0]!r} is missing (model {model.name!r} uses "
                                                 f"{', '.join(model.covariate_names)})")
            out[k].append(model.check_covariates({name: values[name] for name in model.covariate_names}))
    return out


# ----------------------------------------------------------------------------- the weights


def fixed_share(log_weights: np.ndarray, increments: np.ndarray, log_prior: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Bayes then fixed share, per patient: log of (1 − ε) · softmax(log w + ℓ) + ε · π.

    ``log_weights``, ``increments`` (K, P); ``log_prior`` (K,); ``share`` ε (P,). A patient for
    whom every member's increment is −inf (no member can explain the datum) keeps its weights."""
    a = log_weights + np.where(np.isnan(increments), -np.inf, increments)
    top = a.max(axis=0)
    finite = np.isfinite(top)
    posterior = np.exp(a - np.where(finite, top, 0.0))
    posterior = posterior / np.where(finite, posterior.sum(axis=0), 1.0)
    mixed = (1.0 - share) * posterior + share * np.exp(log_prior)[:, None]
    with np.errstate(divide="ignore"):
        return np.where(finite, np.log(mixed), log_weights)


def _datum_weights(model: Model, last_reading: np.ndarray, readings: list) -> tuple[np.ndarray, np.ndarray]:
    """ω_k per patient (0 where the round has no reading) and ``last_reading`` after the round:
    min(1, Δt / persistence) of the reading's analyte, 1 for analytes whose errors do not persist."""
    share = np.zeros(len(readings))
    last = last_reading.copy()
    for i, reading in enumerate(readings):
        if reading is None:
            continue
        a = model.analyte_index(reading.analyte)
        tau = model.analytes[a].persistence_h
        gap = max(float(reading.time) - last[i, a], 0.0)
        share[i] = 1.0 if tau <= 0 else min(1.0, gap / tau)
        last[i, a] = float(reading.time)
    return share, last


# ----------------------------------------------------------------------------- API


def init(
    models: Sequence[Model | str],
    covariates: dict | Sequence[dict] | None = None,
    key=0,
    n_particles: int = 1000,
    method: str = "pf",
    *,
    prior_weights: Sequence[float] | None = None,
    floor: float = FLOOR,
    time: float = 0.0,
    **options,
) -> Averaged:
    """The prior of a model set for one patient (``covariates`` a dict) or many (a list).

    ``prior_weights`` π (default equal; normalised); ``floor`` ε ∈ [0, 1) of the fixed share
    (0: plain BMA). Each member is ``online.init(model, its covariates, key, n_particles,
    method, time=time, **options)`` (the same key for every member: common random numbers)."""
    models = tuple(load_model(m) if isinstance(m, str) else m for m in models)
    _check_members(models)
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must lie in [0, 1), got {floor}")
    prior = np.full(len(models), 1.0) if prior_weights is None else np.asarray(prior_weights, np.float64)
    if prior.shape != (len(models),) or np.any(prior <= 0) or not np.all(np.isfinite(prior)):
        raise ValueError(f"prior_weights: expected {len(models)} positive numbers, got {prior_weights!r}")
    patients = as_covariate_list(covariates)
    per_member = _member_covariates(models, patients)
    members = tuple(online.init(model, c, key, n_particles, method, time=time, **options) for model, c in zip(models, per_member))
    log_prior = np.log(prior / prior.sum())
    P = len(patients)
    return Averaged(members, np.repeat(log_prior[:, None], P, axis=1), log_prior, float(floor),
                    np.stack([online.log_evidence(m) for m in members]), np.full((P, len(models[0].analytes)), -np.inf))


def _for_member(model: Model, events: list) -> list:
    """The patient's events as ``model`` takes them: a covariate change keeps the covariates the
    model declares (and is left out if it changes none of them)."""
    out = []
    for event in events:
        if isinstance(event, CovariateChange):
            values = {k: v for k, v in event.values.items() if k in model.covariate_names}
            if not values:
                continue
            event = CovariateChange(event.time, model.check_covariates(values, partial=True))
        out.append(event)
    return out


def _rounds(per_patient: list[list]) -> list[tuple[list[list], list]]:
    """[(each patient's events up to and including its r-th reading, those readings (None: no
    reading in the round)), ...]; a last round carries what follows the last reading."""
    segments = [split_at(events, Reading) for events in per_patient]
    rounds = []
    for r in range(max(len(s) for s in segments)):
        parts = [s[r] if r < len(s) else ([], None) for s in segments]
        rounds.append(([before + ([reading] if reading is not None else []) for before, reading in parts],
                       [reading for _, reading in parts]))
    return rounds


def update(averaged: Averaged, events) -> Averaged:
    """Assimilate events (per patient, any order; as :func:`.online.update`) into every member,
    reading by reading, and update the model weights after each reading. A covariate that none
    of the models uses is an error. The averaged posterior passed in is left unchanged."""
    per_patient = online._per_patient(averaged.members[0], events, "events")  # the members share their patients
    used = {name for model in averaged.models for name in model.covariate_names}
    for i, patient_events in enumerate(per_patient):
        for event in patient_events:
            stray = sorted(set(event.values) - used) if isinstance(event, CovariateChange) else []
            if stray:
                raise CovariateError(stray[0], f"patient {i}: covariate change of {stray[0]!r}, which none of the models uses")
    members, log_weights, evidence, last = averaged.members, averaged.log_weights, averaged.evidence, averaged.last_reading
    # one round if nothing is mixed in between readings: plain Bayes needs only the total increment
    rounds = _rounds(per_patient) if averaged.floor > 0 else [(per_patient, [None] * len(per_patient))]
    for round_events, readings in rounds:
        if not any(round_events):
            continue
        members = tuple(online.update(m, [_for_member(m.model, e) for e in round_events]) for m in members)
        now = np.stack([online.log_evidence(m) for m in members])
        increments = now - evidence
        share, last = _datum_weights(members[0].model, last, readings)
        log_weights = fixed_share(log_weights, increments, averaged.log_prior, averaged.floor * share)
        evidence = now
    return averaged._replace(members=members, log_weights=log_weights, evidence=evidence, last_reading=last)


def particles(averaged: Averaged, patient: int = 0) -> MixtureParticles:
    """Patient ``patient``'s mixture: every member's particles (:func:`.online.particles`), with
    log-weights log w_m + the member's normalised log-weights. The members must share their
    log-parameter names and compartments (one state layout)."""
    first = averaged.models[0]
    for model in averaged.models[1:]:
        if model.parameter_names != first.parameter_names or model.compartments != first.compartments:
            raise ValueError(f"models {first.name!r} and {model.name!r} have different state layouts "
                             f"({first.parameter_names}, {first.compartments} vs {model.parameter_names}, {model.compartments}): "
                             "their particles cannot form one sample; evaluate each member and mix the results by weight")
    parts = [online.particles(m, patient) for m in averaged.members]
    log_w = averaged.log_weights[:, patient]
    log_weights = np.concatenate([p.log_weights.astype(np.float64) + lw for p, lw in zip(parts, log_w)])
    return MixtureParticles(
        np.concatenate([p.log_params for p in parts]), np.concatenate([p.amounts for p in parts]),
        log_weights - np.logaddexp.reduce(log_weights), parts[0].time,
        np.concatenate([np.full(p.log_weights.shape[0], k) for k, p in enumerate(parts)]), np.exp(log_w),
    )


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, levels) -> np.ndarray:
    """values (N, T), weights (N,) summing to 1 -> (Q, T): inverse of the weighted CDF (midpoint
    rule, as :func:`.resampling.weighted_quantiles`)."""
    out = np.empty((len(levels), values.shape[1]))
    for t in range(values.shape[1]):
        order = np.argsort(values[:, t])
        w = weights[order]
        out[:, t] = np.interp(levels, np.cumsum(w) - 0.5 * w, values[order, t])
    return out


def predict(averaged: Averaged, times, regimen: Sequence = (), analyte: int | str = 0, *, observation_noise: bool = False,
            levels: Sequence[float] = (0.05, 0.5, 0.95)) -> Forecast:
    """The mixture's predictive distribution: Σ_m w_m p(· | M_m, data) from each member's
    :func:`.online.predict`. Mean = Σ w_m mean_m; quantiles of the mixture of the members'
    samples (each member's S samples carry w_m / S); samples: S draws of that mixture
    (systematic, fixed offset: reproducible)."""
    forecasts = [online.predict(m, times, regimen, analyte, observation_noise=observation_noise, levels=levels) for m in averaged.members]
    w = averaged.weights()  # (P, K)
    mean = np.einsum("pk,kpt->pt", w, np.stack([np.asarray(f.mean, np.float64) for f in forecasts]))
    samples = np.concatenate([np.asarray(f.samples, np.float64) for f in forecasts], axis=1)  # (P, K·S, T)
    S = forecasts[0].samples.shape[1]
    sample_weights = np.repeat(w, S, axis=1) / S  # (P, K·S)
    quantiles = np.stack([_weighted_quantiles(samples[i], sample_weights[i], levels) for i in range(samples.shape[0])])
    positions = (np.arange(S) + 0.5) / S
    picks = np.stack([np.minimum(np.searchsorted(np.cumsum(sample_weights[i]), positions), samples.shape[1] - 1) for i in range(samples.shape[0])])
    drawn = np.take_along_axis(samples, picks[:, :, None], axis=1)
    return Forecast(forecasts[0].times, mean, forecasts[0].levels, quantiles, drawn)


# ----------------------------------------------------------------------------- snapshots


def to_bytes(averaged: Averaged) -> bytes:
    """Each member's :func:`.online.to_bytes` and the set's arrays (models by name)."""
    buffer = io.BytesIO()
    meta = {"floor": averaged.floor, "models": [m.name for m in averaged.models]}
    blobs = {f"member{k}": np.frombuffer(online.to_bytes(m), np.uint8) for k, m in enumerate(averaged.members)}
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), log_weights=averaged.log_weights,
             log_prior=averaged.log_prior, evidence=averaged.evidence, last_reading=averaged.last_reading, **blobs)
    return buffer.getvalue()


def from_bytes(data: bytes, models: Sequence[Model | str] | None = None) -> Averaged:
    """Inverse of :func:`to_bytes`; ``models`` default to the built-ins or paths stored by name."""
    with np.load(io.BytesIO(data)) as archive:
        meta = json.loads(archive["meta"].tobytes().decode())
        arrays = {k: archive[k] for k in ("log_weights", "log_prior", "evidence", "last_reading")}
        blobs = [archive[f"member{k}"].tobytes() for k in range(len(meta["models"]))]
    models = meta["models"] if models is None else list(models)
    if len(models) != len(blobs):
        raise ValueError(f"snapshot holds {len(blobs)} models, {len(models)} given")
    members = tuple(online.from_bytes(blob, model) for blob, model in zip(blobs, models))
    return Averaged(members, arrays["log_weights"], arrays["log_prior"], float(meta["floor"]), arrays["evidence"], arrays["last_reading"])
