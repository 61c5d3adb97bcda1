"""Resample-move (Gilks & Berzuini 2001): Metropolis moves that restore a degenerate cloud.

The particle filter's static parameters never change between resamplings except by the
Liu–West kernel, which keeps the cloud's first two moments but not its shape; after many
readings the cloud holds few distinct values. A resample-move step resamples to equal weights
and then moves every particle with a Markov kernel that leaves the exact posterior

    π(θ) ∝ N(θ; μ, Ω) · Π_j p(y_j | θ)

invariant: a Gaussian random walk on the free log-parameters, proposal covariance
(2.38² / d) · Cov_π(θ) from the cloud itself (Roberts, Gelman & Gilks 1997), accepted with
probability min(1, π(θ') / π(θ)). Evaluating π needs the likelihood of the whole history, so a
move costs one replay of the patient's events per particle: it pays when the cloud has
collapsed, not at every reading. Models here are deterministic given θ (no process noise), so
the amounts at the posterior's time follow from θ and the doses.

The small functions below are pure and act on one patient; :func:`resample_move` runs them for
a batch with the particle filter's own replay as the likelihood.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from . import particle_filter as pf
from .dosing import empty_dose_table
from .events import Steps
from .model import Model
from .resampling import systematic_resample, weighted_mean_cov

__all__ = ["random_walk_proposal", "log_prior", "metropolis_accept", "history_log_likelihood", "resample_move"]


def random_walk_proposal(key, log_params: Float[Array, "N p"], free: Float[Array, " p"], scale: float = 1.0) -> Float[Array, "N p"]:
    """θ' = θ + L ε with L Lᵀ = (scale · 2.38² / d) Cov(θ) over the free entries (d of them)."""
    _, cov = weighted_mean_cov(log_params, jnp.zeros(log_params.shape[0], log_params.dtype))
    d = jnp.maximum(free.sum(), 1.0)
    mask = (free[:, None] > 0) & (free[None, :] > 0)
    eye = jnp.eye(cov.shape[0], dtype=cov.dtype)
    cov = jnp.where(mask, cov, eye) * (scale * 2.38**2 / d)
    chol = jnp.linalg.cholesky(cov + 1e-9 * jnp.trace(cov) * eye)
    step = jax.random.normal(key, log_params.shape, log_params.dtype) @ chol.T
    return log_params + jnp.where(free > 0, step, 0.0)


def log_prior(log_params: Float[Array, "N p"], mean: Float[Array, " p"], precision: Float[Array, "p p"], free: Float[Array, " p"]) -> Float[Array, " N"]:
    """log N(θ; μ, Ω) up to a constant, over the free entries (``precision`` = Ω⁻¹ on them, 0 elsewhere)."""
    deviation = jnp.where(free > 0, log_params - mean, 0.0)
    return -0.5 * jnp.einsum("np,pq,nq->n", deviation, precision, deviation)


def metropolis_accept(key, log_target_current: Float[Array, " N"], log_target_proposed: Float[Array, " N"]) -> Bool[Array, " N"]:
    """Accept each proposal with probability min(1, exp(proposed − current)) (symmetric proposal)."""
    u = jax.random.uniform(key, log_target_current.shape, log_target_current.dtype)
    return jnp.log(u) < log_target_proposed - log_target_current


def history_log_likelihood(model: Model, options: pf.Options, log_params: Float[Array, "P N p"], steps: Steps,
                           start: Float[np.ndarray, " P"]):
    """log p(y_1:t | θ) of every particle and its amounts at the end, by replaying the packed
    history from an empty body at ``start``; no resampling. Returns (loglik (P, N), final state).

    Without resampling the normalised log-weights are lw_i = log(1/N) + ℓ_i − log Z with
    log Z the accumulated evidence, so ℓ_i = lw_i + log Z + log N."""
    n_rows, n = log_params.shape[:2]
    dtype = log_params.dtype
    table = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_rows, *a.shape)), empty_dose_table(options.dose_slots, dtype))
    state = pf.ParticleState(
        log_params=log_params, amounts=jnp.broadcast_to(model.amounts_at_start(dtype), (n_rows, n, model.n_compartments)),
        cache=jax.vmap(functools.partial(pf._prepare, model))(log_params),
        log_weights=jnp.full((n_rows, n), -np.log(n), dtype), time=jnp.asarray(start, dtype), doses=table,
        key=jnp.zeros((n_rows, 2), jnp.uint32), log_evidence=jnp.zeros(n_rows, dtype),
        lost_dose=jnp.zeros(n_rows, bool), resamples=jnp.zeros(n_rows, jnp.int32),
        last_reading=pf.no_readings(model, dtype, n_rows),
    )
    state = pf.update(model, options._replace(threshold=0.0), state, steps)  # ESS < 0 never: no resampling
    loglik = state.log_weights + state.log_evidence[:, None] + np.log(n)
    return loglik, state


@functools.lru_cache(maxsize=None)
def _resample_jit():
    def one(key, log_weights):
        return systematic_resample(log_weights, jax.random.uniform(key, (), log_weights.dtype))

    return jax.jit(jax.vmap(one))


@functools.lru_cache(maxsize=None)
def _propose_jit(scale: float):
    return jax.jit(jax.vmap(lambda key, lp, free: random_walk_proposal(key, lp, free, scale), in_axes=(0, 0, None)))


def resample_move(model: Model, options: pf.Options, state: pf.ParticleState, steps: Steps, start: np.ndarray,
                  prior_means: np.ndarray, moves: int = 5, scale: float = 1.0):
    """Resample every patient to equal weights, then ``moves`` Metropolis random-walk moves of
    every particle against the exact posterior given the packed full history ``steps``.

    Returns (state, acceptance rate per patient). The history must be the one the state was
    built from (doses and readings since ``start``); keys advance, evidence is kept."""
    if model.occasions is not None:
        raise ValueError(f"model {model.name!r} has inter-occasion variability: resample-move would need every past occasion's κ")
    free_mask = model.random_mask()
    free = jnp.asarray(free_mask, state.log_params.dtype)
    omega = np.asarray(model.population.omega, np.float64)
    precision = np.zeros_like(omega)
    precision[np.ix_(free_mask, free_mask)] = np.linalg.inv(omega[np.ix_(free_mask, free_mask)])
    precision = jnp.asarray(precision, state.log_params.dtype)
    means = jnp.asarray(prior_means, state.log_params.dtype)
    prior = jax.vmap(log_prior, in_axes=(0, 0, None, None))

    keys = jax.vmap(lambda k: jax.random.split(k, moves + 2))(state.key)  # (P, moves + 2, 2)
    ancestors = _resample_jit()(keys[:, 0], state.log_weights)
    log_params = jnp.take_along_axis(state.log_params, ancestors[..., None], axis=1)
    loglik, replayed = history_log_likelihood(model, options, log_params, steps, start)
    amounts = replayed.amounts
    accepted = jnp.zeros(state.log_weights.shape, jnp.float32)
    for m in range(moves):
        propose_key, accept_key = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys[:, m + 1])
        proposed = _propose_jit(float(scale))(propose_key, log_params, free)
        loglik_new, replayed = history_log_likelihood(model, options, proposed, steps, start)
        current = loglik + prior(log_params, means, precision, free)
        candidate = jnp.where(jnp.isfinite(loglik_new), loglik_new, -jnp.inf) + prior(proposed, means, precision, free)
        accept = jax.vmap(metropolis_accept)(accept_key, current, candidate)
        log_params = jnp.where(accept[..., None], proposed, log_params)
        amounts = jnp.where(accept[..., None], replayed.amounts, amounts)
        loglik = jnp.where(accept, loglik_new, loglik)
        accepted = accepted + accept
    n = state.log_weights.shape[1]
    moved = state._replace(
        log_params=log_params, amounts=amounts, cache=jax.vmap(functools.partial(pf._prepare, model))(log_params),
        log_weights=jnp.full_like(state.log_weights, -np.log(n)), key=keys[:, -1], resamples=state.resamples + 1,
    )
    return moved, np.asarray(accepted.mean(axis=1) / max(moves, 1))
