"""The boundary between the filter and the policy: a weighted particle sample of one patient.

The policy never looks inside a filter. It takes a :class:`PosteriorSample` — N particles,
each a log-parameter vector and the compartment amounts it implies at ``time`` (doses already
given are in those amounts), with normalised log-weights — and the patient's dose history
(for infusions still running at ``time``). Any method can produce one: a particle filter
directly, an EnKF from its members (equal weights), MAP + Laplace from draws.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float

from assimilation import Dose, Model
from assimilation.dosing import DoseTable
from assimilation.occasions import last_dose_times, with_fresh_kappa

__all__ = ["PosteriorSample", "prior_sample", "from_particles", "normalised_weights", "effective_sample_size", "thinned",
           "for_new_occasion"]


class PosteriorSample(NamedTuple):
    """One patient's posterior as N weighted particles at ``time`` (h).

    Attributes:
        log_params: log θ per particle, shape (N, p), in the model's parameter order.
        amounts: compartment amounts (mg) per particle at ``time`` (left limit), shape (N, n).
        log_weights: log-weights, shape (N,); need not be normalised.
        time: h, the time the amounts refer to.
        cache: optional per-particle ``model.dynamics.prepare`` results (leading axis N), e.g.
            the particle filter's cached eigendecompositions; recomputed when None.
    """

    log_params: Float[Array, "N p"]
    amounts: Float[Array, "N n"]
    log_weights: Float[Array, " N"]
    time: Float[Array, ""]
    cache: Any = None


def normalised_weights(log_weights: Float[Array, "... N"]) -> Float[Array, "... N"]:
    """w_i = exp(lw_i − logsumexp(lw)), summing to 1 over the last axis."""
    return jnp.exp(log_weights - logsumexp(log_weights, axis=-1, keepdims=True))


def effective_sample_size(log_weights: Float[Array, "... N"]) -> Float[Array, "..."]:
    """ESS = exp(2 logsumexp(lw) − logsumexp(2 lw))."""
    return jnp.exp(2 * logsumexp(log_weights, axis=-1) - logsumexp(2 * log_weights, axis=-1))


def prior_sample(model: Model, covariates: dict | None, n_particles: int, key: int = 0, time: float = 0.0,
                 amounts: np.ndarray | None = None, dtype=jnp.float32) -> PosteriorSample:
    """Equally weighted draws from the population prior N(log θ_typical + shift, Ω).

    ``amounts`` (n,) or (N, n) sets the state at ``time`` (default: the model's start state, :meth:`Model.amounts_at_start`: no drug on board).
    """
    mean = model.prior_mean(covariates or {})
    root = model.prior_sqrt()
    eta = np.asarray(jax.random.normal(jax.random.PRNGKey(key), (n_particles, root.shape[0]), jnp.float64 if dtype == jnp.float64 else jnp.float32))
    log_params = mean + eta @ root.T
    x = np.broadcast_to(model.amounts_at_start(np.float64) if amounts is None else amounts, (n_particles, model.n_compartments))
    return PosteriorSample(
        jnp.asarray(log_params, dtype), jnp.asarray(x, dtype), jnp.zeros(n_particles, dtype), jnp.asarray(time, dtype)
    )


def from_particles(particles, dtype=jnp.float32) -> PosteriorSample:
    """From the engine's accessor ``assimilation.online.particles(posterior, patient)`` (or any
    object with ``log_params``, ``amounts``, ``log_weights`` and ``time``). Doses recorded after
    ``time`` are not yet in the amounts: pass the full dose history to the policy."""
    return PosteriorSample(
        jnp.asarray(particles.log_params, dtype), jnp.asarray(particles.amounts, dtype),
        jnp.asarray(particles.log_weights, dtype), jnp.asarray(particles.time, dtype),
    )


def thinned(sample: PosteriorSample, n: int, uniform: float = 0.5) -> PosteriorSample:
    """``n`` equally weighted particles drawn by systematic resampling (positions (i + u)/n on
    the weighted CDF, one fixed u so that a recommendation is reproducible). For searches whose
    cost grows with N (ODE models): the decision's Monte Carlo error is O(1/√n), the cost O(n).
    A sample with at most ``n`` particles is returned unchanged."""
    N = sample.log_params.shape[0]
    if N <= n:
        return sample
    weights = np.asarray(normalised_weights(sample.log_weights), np.float64)
    index = np.minimum(np.searchsorted(np.cumsum(weights), (np.arange(n) + uniform) / n), N - 1)
    dtype = sample.amounts.dtype
    return PosteriorSample(jnp.asarray(np.asarray(sample.log_params)[index], dtype), jnp.asarray(np.asarray(sample.amounts)[index], dtype),
                           jnp.full(n, -np.log(n), dtype), sample.time)


def for_new_occasion(model: Model, sample: PosteriorSample, history, first_dose_offset: float, key: int = 0) -> PosteriorSample:
    """The sample to forecast a regimen with, for a model with inter-occasion variability.

    If the regimen's first dose (``first_dose_offset`` h after ``sample.time``) comes more than
    the model's occasion gap after the last dose of ``history`` (doses or a dose table, with a
    leading patient axis for batches), the regimen runs in a new occasion whose κ nobody has
    seen: every particle's κ is drawn afresh from N(0, σ²) (with a fixed ``key``, so every
    candidate meets the same draws and a recommendation is reproducible). The new κ is applied
    from the decision time rather than from the first dose: exact when the regimen starts at
    once (a chemotherapy cycle), otherwise an approximation for the drug left from the old
    occasion before the first new dose. Unchanged for models without IOV.
    """
    if model.occasions is None:
        return sample
    if isinstance(history, DoseTable):
        last = last_dose_times(np.asarray(history.time), np.asarray(history.amount))
    else:
        given = [float(d.time) for d in history if isinstance(d, Dose) and d.amount > 0]
        last = np.asarray(max(given) if given else -np.inf)
    opens = model.occasions.starts(last, np.asarray(sample.time, np.float64) + first_dose_offset)
    if not np.any(opens):
        return sample
    lp = jnp.asarray(sample.log_params)
    renewed = with_fresh_kappa(model, lp, jax.random.PRNGKey(key))
    opens = jnp.asarray(opens).reshape(opens.shape + (1, 1)) if np.ndim(opens) else jnp.asarray(opens)
    return sample._replace(log_params=jnp.where(opens, renewed, lp), cache=None)
