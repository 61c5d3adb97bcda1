"""Replay recorded patients through a method, forecasting each reading before it is seen.

For every patient, in time order: the doses up to a reading are assimilated, the reading is
forecast from the posterior at that moment (predictive distribution of a *reading*, residual
error included), and only then is the reading assimilated. All patients advance together, one
reading per round, so the filters run batched.

Forecast quality (Sheiner & Beal 1981, "Some suggestions for measuring predictive
performance", J Pharmacokinet Biopharm 9:503-512), over readings that are not censored:

* bias = mean(PRED_MEAN − DV), in the reading's unit;
* relative RMSE = sqrt(mean(((PRED_MEAN − DV)/DV)²)), over DV > 0;
* MdAPE = median(|PRED_MEAN − DV| / DV), over DV > 0;
* coverage = fraction of readings with PRED_Q05 ≤ DV ≤ PRED_Q95.

Each row also carries the reading's one-step-ahead predictive log-likelihood
log p(y_k | y_1:k−1) under the method (:func:`.online.log_evidence` before and after it: the
particle filter's normalising constant, the EnKF's Gaussian predictive, MAP's difference of
Laplace evidences; for a censored reading log P(y < LLOQ)); its sum over a patient is the
patient's log marginal likelihood (prediction error decomposition), the number a model check
or a model comparison needs. A dense sensor's readings enter with their likelihood weight,
as the filter weighs them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

from . import online
from .dosing import Dose
from .events import Reading, split_at
from .model import Model

__all__ = ["PatientRecord", "ForecastRow", "Summary", "replay", "summarize", "log_lik_by_patient"]


class PatientRecord(NamedTuple):
    """One patient's covariates (at the start) and events (any order): doses, readings,
    covariate changes, resets and steady-state doses (:mod:`.events`; a NONMEM dataset gives
    them through :func:`.nonmem.read_records`)."""

    id: object
    covariates: dict
    events: Sequence[Dose | Reading]


class ForecastRow(NamedTuple):
    """The one-step-ahead forecast of one reading (quantiles 5 / 50 / 95 %)."""

    id: object
    time: float
    dv: float
    censored: bool
    pred_mean: float
    pred_q05: float
    pred_q50: float
    pred_q95: float
    log_lik: float  # one-step-ahead predictive log-likelihood of the reading


class Summary(NamedTuple):
    n_readings: int  # forecast readings that count (not censored)
    bias: float
    relative_rmse: float
    mdape: float
    coverage90: float
    log_lik: float  # sum of every reading's one-step-ahead log-likelihood, censored included


def log_lik_by_patient(rows: Sequence[ForecastRow]) -> dict:
    """Patient id -> sum of its readings' one-step-ahead log-likelihoods (its log marginal
    likelihood under the method), in order of first appearance."""
    totals: dict = {}
    for r in rows:
        totals[r.id] = totals.get(r.id, 0.0) + r.log_lik
    return totals


def _rounds(events: Sequence) -> list[tuple[list, Reading | None]]:
    """[(doses and covariate changes before reading k, reading k), ..., (trailing ones, None)]."""
    return split_at(events, Reading)


def replay(
    model: Model,
    patients: Sequence[PatientRecord],
    method: str = "pf",
    n_particles: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    **options,
) -> list[ForecastRow]:
    """One-step-ahead forecasts of every reading of every patient (in patient, time order).

    ``progress(k)`` is called after each assimilated reading round with the number of
    readings done in that round.
    """
    if not patients:
        return []
    posterior = online.init(model, [p.covariates for p in patients], [seed + i for i in range(len(patients))], n_particles, method, **options)
    plans = [_rounds(p.events) for p in patients]
    rows: list[list[ForecastRow]] = [[] for _ in patients]
    for k in range(max(len(plan) for plan in plans)):
        pending: list[tuple[int, tuple]] = []  # (patient, forecast fields) until the reading's log-likelihood is known
        steps = [plan[k] if k < len(plan) else ([], None) for plan in plans]
        posterior = online.update(posterior, [list(doses) for doses, _ in steps])
        now = np.asarray(posterior.state.time)[: len(patients)]
        readings = [reading for _, reading in steps]
        for analyte in {model.analyte_index(r.analyte) for r in readings if r is not None}:
            chosen = [r is not None and model.analyte_index(r.analyte) == analyte for r in readings]
            times = np.array([[r.time if c else t] for r, c, t in zip(readings, chosen, now)])
            forecast = online.predict(posterior, times, analyte=analyte, observation_noise=True, levels=(0.05, 0.5, 0.95))
            mean, q = np.asarray(forecast.mean[:, 0]), np.asarray(forecast.quantiles[:, :, 0])
            for i, (r, c) in enumerate(zip(readings, chosen)):
                if c:
                    pending.append((i, (patients[i].id, float(r.time), float(r.value), bool(r.censored), float(mean[i]), *map(float, q[i]))))
        if any(r is not None for r in readings):
            before = online.log_evidence(posterior)
            posterior = online.update(posterior, [[r] if r is not None else [] for r in readings])
            increment = online.log_evidence(posterior) - before
            for i, fields in pending:
                rows[i].append(ForecastRow(*fields, float(increment[i])))
            if progress is not None:
                progress(sum(r is not None for r in readings))
    return [row for patient_rows in rows for row in patient_rows]


def summarize(rows: Sequence[ForecastRow]) -> Summary:
    """Bias, relative RMSE, MdAPE and 90 % coverage over the uncensored readings."""
    kept = [r for r in rows if not r.censored]
    total = float(sum(r.log_lik for r in rows))
    if not kept:
        return Summary(0, float("nan"), float("nan"), float("nan"), float("nan"), total)
    pred = np.array([r.pred_mean for r in kept])
    dv = np.array([r.dv for r in kept])
    positive = dv > 0
    relative = (pred[positive] - dv[positive]) / dv[positive]
    inside = np.array([r.pred_q05 <= r.dv <= r.pred_q95 for r in kept])
    return Summary(
        n_readings=len(kept),
        bias=float(np.mean(pred - dv)),
        relative_rmse=float(np.sqrt(np.mean(relative**2))) if relative.size else float("nan"),
        mdape=float(np.median(np.abs(relative))) if relative.size else float("nan"),
        coverage90=float(inside.mean()),
        log_lik=total,
    )
