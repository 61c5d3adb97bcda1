"""Ensemble adjustment Kalman filter (Anderson 2001) on the augmented state (log θ, amounts).

Members are propagated exactly like particles (equal weights). A scalar reading y with
residual variance R updates the ensemble deterministically — no perturbed observations, so no
random numbers after initialisation — on the error model's transformed scale (log for
log-normal error):

    h_i = g(f_i),  h̄, s² = ensemble mean, variance of h;  s²ₐ = (1/s² + 1/R)⁻¹
    h̄ₐ = s²ₐ (h̄/s² + g(y)/R);   hᵢᵃ = h̄ₐ + sqrt(s²ₐ/s²) (hᵢ − h̄)
    uᵢ ← uᵢ + Cov(u, h)/s² · (hᵢᵃ − hᵢ)          for u = (log θ, amounts)

R is evaluated at the ensemble-mean prediction. With inter-occasion variability the members'
κ are redrawn from N(0, σ²) when a dose opens an occasion (the only random numbers after
initialisation). A censored reading (below LLOQ) is treated as
a reading of LLOQ/2 with the extra variance LLOQ²/12 of a uniform on [0, LLOQ] (an
approximation; the particle filter uses the exact censored likelihood).

``log_evidence`` accumulates each reading's one-step-ahead predictive log-density under the
Gaussian view, log N(g(y); h̄, s² + R) (for a censored reading log P(g(y) < g(LLOQ))), the
increment that model averaging (:mod:`.averaging`) weighs models by.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from .events import Steps
from .model import Model
from .residuals import LogNormal
from .particle_filter import (  # same state layout, prior, occasions and prediction as the particle filter
    ParticleState, _prepare, advance, dose_terms, forecast, initial_state, reading_weight, renew_occasions, restarts,
    step_occasion_starts,
)
from .simulate import predict_readings

__all__ = ["Options", "initial_state", "update", "forecast"]


class Options(NamedTuple):
    n_particles: int = 1000  # ensemble members
    dose_slots: int = 4
    inflation: float = 1.0  # multiplicative inflation of log θ spread before each update
    dtype: str = "float32"


def _replace_failed(state: ParticleState) -> ParticleState:
    """Members whose ODE solve failed (non-finite amounts) become copies of successful ones, in
    turn: the particle filter gives such a member zero weight, which for equal-weight members
    is the same as resampling it away. (If every member failed, the ensemble stays non-finite.)"""
    ok = jnp.all(jnp.isfinite(state.amounts), axis=1)
    members = jnp.arange(ok.shape[0])
    donors = jnp.argsort(~ok, stable=True)  # successful members first, in order
    source = jnp.where(ok, members, donors[members % jnp.maximum(ok.sum(), 1)])
    return state._replace(log_params=state.log_params[source], amounts=state.amounts[source],
                          cache=jax.tree.map(lambda leaf: leaf[source], state.cache))


def _adjust_one(model: Model, slots: int | None, boluses_only: bool, state: ParticleState, step: Steps,
                restarting: bool = False) -> ParticleState:
    state = advance(model, state, step, slots, boluses_only, restarting)
    if model.dynamics.may_fail:
        state = _replace_failed(state)
    moved = state.amounts
    f_all = jax.vmap(lambda lp, x: predict_readings(model, model.parameters(lp), x))(state.log_params, moved)  # (N, A)

    def on_scale(index):
        error = model.analytes[index].error
        f = f_all[:, index]
        h = error.transform(f)
        lloq_var = jnp.where(step.reading_censored, step.reading_value**2 / 12.0, 0.0)
        y_nat = jnp.where(step.reading_censored, 0.5 * step.reading_value, step.reading_value)
        y = error.transform(y_nat)
        if isinstance(error, LogNormal):
            lloq_var = lloq_var / jnp.maximum(y_nat, 1e-12) ** 2  # delta method onto the log scale
        measurement = error.variance(jnp.mean(f))
        return h, y, measurement + lloq_var, error.transform(step.reading_value), measurement

    options = [on_scale(i) for i in range(len(model.analytes))]
    h, y, R, limit, R_measurement = (jnp.stack([o[j] for o in options])[step.reading_analyte] for j in range(5))
    weight, last_reading = reading_weight(model, state.last_reading, step)
    R = R / jnp.maximum(weight, 1e-6)  # a tempered Gaussian likelihood is one with variance R / w

    free = jnp.asarray(model.random_mask(), state.log_params.dtype)
    log_params = state.log_params
    h_mean, s2 = jnp.mean(h), jnp.var(h)
    s2 = jnp.maximum(s2, 1e-12)
    s2_a = 1.0 / (1.0 / s2 + 1.0 / R)
    h_a = s2_a * (h_mean / s2 + y / R) + jnp.sqrt(s2_a / s2) * (h - h_mean)
    # gain Cov(u, h)/s² for u = log θ and u = amounts, as (h − h̄)ᵀ(u − u₀)/(N s²): Σ(h − h̄) = 0
    # lets any reference member u₀ stand in for the mean (u₀ keeps the sums small when the
    # ensemble has collapsed). Two matrix-vector products and no concatenated (N, p+n) ensemble:
    # ~20 % faster per step on CPU than centring a concatenation by its column means.
    centred, scale = h - h_mean, 1.0 / (h.shape[0] * s2)
    shift = (h_a - h)[:, None]
    gain_params = scale * (centred @ (log_params - log_params[0]))
    gain_amounts = scale * (centred @ (moved - moved[0]))
    new_log_params = jnp.where(free > 0, log_params + shift * gain_params, log_params)
    new_amounts = jnp.maximum(moved + shift * gain_amounts, 0.0)  # amounts cannot be negative
    # one-step-ahead predictive of the reading on the error's scale, N(h̄, s² + R): its density,
    # or for a censored reading P(reading < LLOQ) (the update itself uses the LLOQ/2 approximation)
    below = log_ndtr((limit - h_mean) / jnp.sqrt(s2 + R_measurement / jnp.maximum(weight, 1e-6)))
    log_evidence = jnp.where(step.reading_censored, below, -0.5 * ((y - h_mean) ** 2 / (s2 + R) + jnp.log(2 * jnp.pi * (s2 + R))))

    valid = step.reading_valid
    return state._replace(
        log_params=jnp.where(valid, new_log_params, log_params),
        amounts=jnp.where(valid, new_amounts, state.amounts),
        cache=jax.tree.map(lambda a, b: jnp.where(valid, a, b), _prepare(model, new_log_params), state.cache),
        log_evidence=state.log_evidence + jnp.where(valid, log_evidence, 0.0),
        last_reading=last_reading,
    )


def _inflate(log_params, factor):
    mean = log_params.mean(0)
    return mean + factor * (log_params - mean)


@functools.lru_cache(maxsize=None)
def _inflate_jit(model: Model, inflation: float):
    def one(state, step):  # inflate only before a real reading (never on padding/dose steps)
        inflated = jnp.where(step.reading_valid, _inflate(state.log_params, inflation), state.log_params)
        return state._replace(log_params=inflated, cache=_prepare(model, inflated))

    return jax.jit(jax.vmap(one), donate_argnums=(0,))


@functools.lru_cache(maxsize=None)
def _adjust_jit(model: Model, slots: int | None, donate: bool = False, boluses_only: bool = False, restarting: bool = False):
    one = functools.partial(_adjust_one, model, slots, boluses_only, restarting=restarting)
    return jax.jit(jax.vmap(one), donate_argnums=(0,) if donate else ())


def update(model: Model, options: Options, state: ParticleState, steps: Steps, donate: bool = False) -> ParticleState:
    """Assimilate packed steps (P, S) step by step; ``donate`` as in :func:`particle_filter.update`."""
    starts = step_occasion_starts(model, state, steps)
    owned = donate  # the caller's state only when given up; the states made here always
    for s in range(steps.dose_valid.shape[1]):
        step = steps.step(s)
        if step.dose_valid.any() or step.reading_valid.any():
            step = Steps(*map(jnp.asarray, step))
            if options.inflation != 1.0:
                state = _inflate_jit(model, float(options.inflation))(state if owned else jax.tree.map(jnp.copy, state), step)
                owned = True
            restarting = restarts(step)  # a reset or steady-state dose: a kernel of its own, all slots
            slots, boluses_only = (None, False) if restarting else dose_terms(model, state, step)
            state = _adjust_jit(model, slots, owned, boluses_only, restarting)(state, step)
            owned = True
            if starts is not None:  # a new occasion: members' κ redrawn from N(0, σ²)
                state = renew_occasions(model, state, np.flatnonzero(starts[:, s]), donate=True)
    return state
