"""Exposure over a patient's course: the target metric per window (e.g. AUC24 per day, the
week's INR time in range, the cycle's ANC nadir), past and future, from the posterior.

The posterior's particles (their log-parameters, i.e. what the patient's data taught the
filter) are replayed through every dose given from the model's start state, and forward
through the doses planned. For a model whose parameters are static (no inter-occasion
variability) this is the smoothed estimate of past exposure given everything measured so far,
which is what an exposure report should show: a day's AUC is revised when a later level
reveals the patient's clearance. For a model with inter-occasion variability the current
occasion's deviations are applied to the whole course (an approximation, stated in the report).

Pure numerics: one jitted call per (model, metric, shape); shapes are bucketed (grid points,
dose slots, particles) so that patients and days do not recompile.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from assimilation import Dose, Model
from assimilation.simulate import amounts_at, dose_table_of

from .attainment import attainment
from .metrics import Target

__all__ = ["WindowExposure", "exposure_by_window"]

GRID_POINTS = 512
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class WindowExposure(NamedTuple):
    """Per window (W,): starts (model h), PTA, risk, mean and quantiles (W, Q) at ``levels``."""

    starts: np.ndarray
    window_h: float
    pta: np.ndarray
    risk: np.ndarray
    mean: np.ndarray
    quantiles: np.ndarray
    levels: tuple[float, ...]


def _bucket(n: int, smallest: int = 8) -> int:
    size = smallest
    while size < n:
        size *= 2
    return size


@functools.lru_cache(maxsize=None)
def _kernel(model: Model, analyte: int, target: Target, n_windows: int):
    def one(log_params, table, times):
        amounts = amounts_at(model, log_params, table, times)
        params = model.parameters(log_params)
        return jax.vmap(lambda x: model.analytes[analyte].predict(params, x))(amounts)

    def run(log_params, weights, table, times, starts):
        values = jax.vmap(one, in_axes=(0, None, None))(log_params, table, times)  # (N, T)
        metric = jnp.stack([target.metric(times, values, starts[w]) for w in range(n_windows)])  # (W, N)
        return attainment(metric, weights, target, QUANTILES)

    return jax.jit(run)


def exposure_by_window(model: Model, log_params: Float[Array, "N p"], log_weights: Float[Array, " N"], doses: Sequence[Dose],
                       target: Target, starts: Sequence[float], max_particles: int = 256) -> WindowExposure:
    """The target metric in each window [start, start + metric.window) (model h), replayed from
    the model's start state through ``doses`` (given and planned) with the posterior's particles.

    ``max_particles``: the particles are thinned to at most this many (systematically, by
    weight), which bounds the cost for ODE models; quantiles are then those of the thinned sample."""
    starts = np.asarray(sorted(starts), np.float64)
    if starts.size == 0:
        raise ValueError("no window")
    window = float(target.metric.window)
    log_params = np.asarray(log_params, np.float64)
    weights = np.exp(np.asarray(log_weights, np.float64) - np.max(log_weights))
    weights /= weights.sum()
    if len(weights) > max_particles:  # systematic thinning: equal weights after
        positions = (np.arange(max_particles) + 0.5) / max_particles
        pick = np.minimum(np.searchsorted(np.cumsum(weights), positions), len(weights) - 1)
        log_params, weights = log_params[pick], np.full(max_particles, 1.0 / max_particles)
    n = _bucket(len(weights))
    pad = n - len(weights)
    log_params = np.concatenate([log_params, np.repeat(log_params[:1], pad, axis=0)])
    weights = np.concatenate([weights, np.zeros(pad)])
    span_end = float(starts[-1]) + window
    times = np.linspace(0.0, span_end, GRID_POINTS)
    table = dose_table_of(model, [d for d in doses if d.time < span_end], slots=_bucket(sum(d.time < span_end for d in doses), 4),
                          dtype=jnp.float32)
    w = _bucket(len(starts), 4)
    padded_starts = np.concatenate([starts, np.repeat(starts[-1:], w - len(starts))])
    run = _kernel(model, model.analyte_index(target.analyte), target, w)
    result = run(jnp.asarray(log_params, jnp.float32), jnp.asarray(weights, jnp.float32), table,
                 jnp.asarray(times, jnp.float32), jnp.asarray(padded_starts, jnp.float32))
    k = len(starts)
    return WindowExposure(starts, window, np.asarray(result.pta)[:k], np.asarray(result.risk)[:k], np.asarray(result.mean)[:k],
                          np.asarray(result.quantiles)[:k], QUANTILES)
