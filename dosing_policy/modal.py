"""Exact pulse responses of a linear compartment model in modal coordinates (fast path).

For dx/dt = K x + u(t) with K = V diag(λ) V⁻¹ (:class:`assimilation.structure.Modes`, the
cache of :class:`assimilation.LinearCompartments`) and an analyte linear in the amounts,
f(x) = cᵀx, the analyte at τ h after the decision time t0 is

    f(τ) = Σ_m o_m [ z_m e^{λ_m τ} + Σ_pulses b_m,p · g(λ_m, τ; a_p, d_p) ],   o = cᵀV, z = V⁻¹ x(t0),

where a pulse delivers its amount into compartment k from a ≥ 0 for d h (d = 0: bolus),
b_m,p = F_k (V⁻¹)_{m,k} · amount_p, and with s = clip(τ − a, 0, d) the time infused so far
and age = max(τ − a − d, 0):

    g(λ, τ; a, d) = e^{λ·age} · φ(λ, s)/d          (d > 0),   φ(λ, s) = (e^{λs} − 1)/λ
    g(λ, τ; a, 0) = e^{λ(τ−a)} · 1[τ > a]           (bolus; states are left-continuous).

Doses of the history that are still delivering at t0 become pulses with a ≥ 0 (an
infusion running across t0 contributes its remainder; a bolus before t0 is already in x(t0)).
This is what ``LinearCompartments.propagate`` computes; written directly for a whole time
grid and all particles at once (particle axis last, so that XLA's CPU loops vectorise over
particles) it is several times cheaper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from assimilation.dosing import DoseTable

__all__ = ["phi", "pulse_response", "grid_unit_responses", "output_weights", "remaining_pulses"]


def phi(rate, s):
    """(e^{rate·s} − 1)/rate, → s as rate → 0."""
    small = jnp.abs(rate * s) < 1e-6
    safe = jnp.where(small, 1.0, rate)
    return jnp.where(small, s * (1 + 0.5 * rate * s), jnp.expm1(safe * s) / safe)


def output_weights(predict, params, vectors: Float[Array, "n n"]) -> Float[Array, " n"]:
    """o = cᵀV for a linear analyte f(x) = cᵀx (c read off at the unit vectors)."""
    n = vectors.shape[0]
    c = jax.vmap(lambda e: predict(params, e))(jnp.eye(n, dtype=vectors.dtype))
    return jnp.sum(c[:, None] * vectors, axis=0)


def remaining_pulses(history: DoseTable, lag: Float[Array, " n"], t0):
    """Start (h after t0, ≥ 0), duration and amount still to be delivered of every history slot
    (amount 0 for drug already delivered)."""
    arrival = history.time + lag[history.compartment]
    is_bolus = history.duration <= 0
    start = jnp.maximum(arrival, t0)
    end = arrival + history.duration
    left = jnp.clip(end - start, 0.0, None)
    fraction = jnp.where(is_bolus, (arrival >= t0).astype(arrival.dtype), left / jnp.where(is_bolus, 1.0, history.duration))
    return start - t0, jnp.where(is_bolus, 0.0, left), history.amount * fraction


# ----------------------------------------------------------------------------- particles-last layout
# The same formulas with the particle axis last, so that XLA's CPU loops vectorise over
# particles (with particles first the innermost axis is the 2-3 modes: ~4x slower).


def pulse_response(rates: Float[Array, "n N"], tau: Float[Array, " T"], start: Float[Array, " N"], duration: Float[Array, " N"]) -> Float[Array, "T n N"]:
    """g(λ_m, τ; a, d) of a unit pulse for every grid time, mode and particle (particle axis
    last), with one exponential per element: G = e^{λ y} with y = τ − a while infusing and
    τ − a − d after, then g = (G − 1)/λ/d resp. G · φ(λ, d)/d (bolus: G for τ > a)."""
    is_bolus = duration <= 0
    d = jnp.where(is_bolus, 0.0, duration)[None, None, :]
    since = (tau[:, None] - start[None, :])[:, None, :]  # (T, 1, N)
    infusing = since <= d
    y = jnp.where(infusing, jnp.maximum(since, 0.0), since - d)
    grow = jnp.exp(rates[None] * y)
    during = phi_from_decay(rates[None], y, grow)
    scale = jnp.where(is_bolus, 1.0, duration)[None, None, :]
    infusion = jnp.where(infusing, during, grow * phi(rates, jnp.where(is_bolus, 0.0, duration)[None, :])[None]) / scale
    bolus = jnp.where(since > 0, grow, 0.0)
    return jnp.where(is_bolus[None, None, :], bolus, infusion)


def phi_from_decay(rates, s, decay):
    """φ(λ, s) = (e^{λs} − 1)/λ from a known e^{λs}; a second-order series for |λs| < 1e-3
    (float32 cancellation then costs < 1e-4 relative)."""
    small = jnp.abs(rates * s) < 1e-3
    safe = jnp.where(small, 1.0, rates)
    return jnp.where(small, s * (1 + 0.5 * rates * s), (decay - 1.0) / safe)


def grid_unit_responses(rates: Float[Array, "n N"], decay: Float[Array, "T n N"], offsets: Float[Array, " T"],
                        weights: Float[Array, "n N"], steps: tuple[int, ...], step: float) -> Float[Array, "D T N"]:
    """Σ_m weights_m · g(λ_m, τ_j; 0, d) on the grid for durations d = steps·step (no lag),
    from two tables shared by all durations, E = e^{λτ} (``decay``) and φ(λ, τ):

        during the infusion (τ ≤ d):  Σ_m w_m φ(λ_m, τ)/d
        after it (τ_j > d):           Σ_m w_m φ(λ_m, d)/d · E[j − d/step]   (a shifted E)
        bolus (d = 0, τ > 0):         Σ_m w_m E[j]
    """
    T = offsets.shape[0]
    j = jnp.arange(T)[:, None]
    during = jnp.sum(weights[None] * phi_from_decay(rates[None], offsets[:, None, None], decay), axis=1)  # (T, N)
    out = []
    for dd in steps:
        if dd == 0:
            out.append(jnp.where(j >= 1, jnp.sum(weights[None] * decay, axis=1), 0.0))
            continue
        d = dd * step
        if dd >= T:
            out.append(during / d)
            continue
        after = jnp.sum((weights * phi(rates, d))[None] * decay[: T - dd], axis=1)  # (T − dd, N)
        after = jnp.concatenate([jnp.zeros((dd, after.shape[1]), after.dtype), after])
        out.append(jnp.where(j <= dd, during, after) / d)
    return jnp.stack(out)
