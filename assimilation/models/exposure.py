"""Exposure metrics as pure functions of a simulated trajectory.

Every function takes ``times`` (h, increasing, shape (T,)) and ``values`` of shape (..., T)
— one trajectory per leading index, e.g. (particles, T) or (patients, particles, T) — and
reduces the last axis, so it is vectorised over particles and jit/vmap-able. The
trajectory is taken as piecewise linear between the grid points (the trapezoid rule), so
a grid of a few points per hour is accurate for the AUC of a smooth concentration; put grid
points at the start and end of every infusion to resolve peaks exactly.

Functions over particles (:func:`probability`) take optional normalised ``weights`` (..., N)
for a weighted particle cloud; without weights the particles are equally weighted.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "area_under_curve", "auc24", "value_at", "trough", "peak", "nadir", "time_of_nadir",
    "fraction_of_time_in_range", "probability", "ctcae_neutropenia_grade",
]


def _segments(times, values, start, end):
    """Segment ends clipped to [start, end] and the (linear) values there."""
    t0, t1 = times[:-1], times[1:]
    v0, v1 = values[..., :-1], values[..., 1:]
    a = jnp.clip(t0, start, end)
    b = jnp.clip(t1, start, end)
    width = jnp.where(t1 > t0, t1 - t0, 1.0)
    va = v0 + (v1 - v0) * (a - t0) / width
    vb = v0 + (v1 - v0) * (b - t0) / width
    return a, b, va, vb


def area_under_curve(times: Float[Array, " T"], values: Float[Array, "... T"], start, end) -> Float[Array, "..."]:
    """∫_start^end v(t) dt of the piecewise-linear trajectory (mg·h/L for mg/L and h).
    The grid must cover [start, end]."""
    a, b, va, vb = _segments(times, values, start, end)
    return jnp.sum(0.5 * (va + vb) * (b - a), axis=-1)


def auc24(times, concentrations, day_start) -> Float[Array, "..."]:
    """AUC over the 24 h from ``day_start`` (h), mg·h/L."""
    return area_under_curve(times, concentrations, day_start, day_start + 24.0)


def value_at(times, values, t) -> Float[Array, "..."]:
    """Linear interpolation of the trajectory at time ``t`` (inside the grid)."""
    i = jnp.clip(jnp.searchsorted(times, t, side="right") - 1, 0, times.shape[0] - 2)
    t0, t1 = times[i], times[i + 1]
    w = jnp.clip((t - t0) / jnp.where(t1 > t0, t1 - t0, 1.0), 0.0, 1.0)
    return values[..., i] * (1 - w) + values[..., i + 1] * w


def trough(times, concentrations, dose_time) -> Float[Array, "..."]:
    """Concentration just before the dose at ``dose_time``. States are left-continuous
    (a prediction at a dose time is pre-dose), so this is the value at ``dose_time``."""
    return value_at(times, concentrations, dose_time)


def _masked(times, values, start, end, fill):
    inside = (times >= start) & (times <= end)
    return jnp.where(inside, values, fill)


def peak(times, values, start, end) -> Float[Array, "..."]:
    """Largest value on the grid within [start, end]."""
    return jnp.max(_masked(times, values, start, end, -jnp.inf), axis=-1)


def nadir(times, values, start, end) -> Float[Array, "..."]:
    """Smallest value on the grid within [start, end] (e.g. ANC nadir of a cycle)."""
    return jnp.min(_masked(times, values, start, end, jnp.inf), axis=-1)


def time_of_nadir(times, values, start, end) -> Float[Array, "..."]:
    """Grid time (h) of the smallest value within [start, end]."""
    return times[jnp.argmin(_masked(times, values, start, end, jnp.inf), axis=-1)]


def fraction_of_time_in_range(times, values, low, high, start, end) -> Float[Array, "..."]:
    """Fraction of [start, end] with low ≤ v(t) ≤ high, v linear between grid points:
    Rosendaal's linear-interpolation method for the INR time in therapeutic range
    (Rosendaal et al., Thromb Haemost 1993;69:236-239)."""
    a, b, va, vb = _segments(times, values, start, end)
    lo, hi = jnp.minimum(va, vb), jnp.maximum(va, vb)
    spread = hi - lo
    overlap = jnp.clip(jnp.minimum(hi, high) - jnp.maximum(lo, low), 0.0, None)
    flat_inside = ((lo >= low) & (hi <= high)).astype(values.dtype)
    share = jnp.where(spread > 0, overlap / jnp.where(spread > 0, spread, 1.0), flat_inside)
    return jnp.sum(share * (b - a), axis=-1) / (end - start)


def probability(event: Array, weights: Array | None = None) -> Float[Array, "..."]:
    """P(event) over the last axis (particles): weighted mean of a boolean array."""
    event = event.astype(jnp.float32)
    if weights is None:
        return jnp.mean(event, axis=-1)
    return jnp.sum(event * weights, axis=-1) / jnp.sum(weights, axis=-1)


def ctcae_neutropenia_grade(anc, lower_limit_normal: float = 2.0):
    """CTCAE v5.0 "neutrophil count decreased" grade of an ANC in 10^9/L: 0 (≥ LLN),
    1 (< LLN), 2 (< 1.5), 3 (< 1.0), 4 (< 0.5). The LLN is laboratory-specific; 2.0 is an
    assumed default (Common Terminology Criteria for Adverse Events v5.0, NCI 2017,
    Investigations)."""
    anc = jnp.asarray(anc)
    return (
        (anc < lower_limit_normal).astype(jnp.int32)
        + (anc < 1.5).astype(jnp.int32)
        + (anc < 1.0).astype(jnp.int32)
        + (anc < 0.5).astype(jnp.int32)
    )
