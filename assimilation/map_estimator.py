"""Maximum a posteriori estimate with a Laplace approximation — the classic MIPD baseline.

For each patient, minimise over the free log-parameters (those with Ω_ii > 0)

    J(θ) = ½ (θ − μ)ᵀ Ω⁻¹ (θ − μ) − Σ_j log p(y_j | θ)

with scipy's L-BFGS-B (gradients from JAX, float64), started from the prior mode μ AND from
the previous mode, keeping the better optimum. The posterior is approximated by
N(θ̂, (∇²J(θ̂))⁻¹); predictions sample it and replay the dose history for each sample.
The likelihood reuses the particle filter's step with a single particle, so censoring, lag
times and dose handling are identical across methods. Each update refits on the whole history.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from . import particle_filter as pf
from .events import Steps, bucket, empty_steps
from .model import Model

__all__ = ["Options", "MapState", "initial_state", "update", "forecast", "laplace_log_evidence"]


class Options(NamedTuple):
    n_particles: int = 1000  # Laplace samples used for prediction
    dose_slots: int = 4
    dtype: str = "float32"
    max_iterations: int = 200


class MapState(NamedTuple):
    prior_mean: jax.Array  # (P, p) log scale
    mode: jax.Array  # (P, p)
    covariance: jax.Array  # (P, p, p) Laplace covariance (zero rows for fixed parameters)
    objective: jax.Array  # (P,) J at the mode
    time: jax.Array  # (P,)
    key: jax.Array  # (P, 2)
    history: Steps  # (P, S) every step assimilated so far
    n_steps: jax.Array  # (P,)
    start_time: jax.Array  # (P,) time of the (empty) initial state the history is replayed from


def initial_state(model: Model, options: Options, prior_means, keys, time: float = 0.0) -> MapState:
    n_rows, p = prior_means.shape
    omega = np.asarray(model.population.omega, np.float64)
    empty = empty_steps(n_rows, 1, np.float64)
    return MapState(
        prior_mean=np.asarray(prior_means, np.float64),
        mode=np.asarray(prior_means, np.float64),
        covariance=np.broadcast_to(omega, (n_rows, p, p)).copy(),
        objective=np.zeros(n_rows),
        time=np.full(n_rows, time, np.float64),
        key=keys,
        history=empty,
        n_steps=np.zeros(n_rows, np.int32),
        start_time=np.full(n_rows, time, np.float64),
    )


def _single_particle_state(model: Model, options: Options, log_params, start_time) -> pf.ParticleState:
    """A one-particle filter state: its log-evidence over the history is log p(y | θ)."""
    dtype = log_params.dtype
    table = pf.empty_dose_table(options.dose_slots, dtype)
    return pf.ParticleState(
        log_params=log_params[None, :], amounts=model.amounts_at_start(dtype)[None, :],
        cache=pf._prepare(model, log_params[None, :]), log_weights=jnp.zeros(1, dtype),
        time=jnp.asarray(start_time, dtype), doses=table, key=jnp.zeros(2, jnp.uint32),
        log_evidence=jnp.zeros((), dtype), lost_dose=jnp.zeros((), bool), resamples=jnp.zeros((), jnp.int32),
        last_reading=pf.no_readings(model, dtype),
    )


@functools.lru_cache(maxsize=None)
def _objective(model: Model, options: Options, restarting: bool = False):
    """J(free θ) for one patient's padded history, jitted (float64 under enable_x64)."""
    free = np.flatnonzero(model.population.random_mask())
    omega_free = np.asarray(model.population.omega, np.float64)[np.ix_(free, free)]
    precision = np.linalg.inv(omega_free)

    def objective(theta_free, prior_mean, history: Steps, start_time):
        log_params = prior_mean.at[free].set(theta_free)
        state = _single_particle_state(model, options, log_params, start_time)

        def step(s, st):
            # every dose slot, censoring possible; ``restarting``: the history has a reset or steady-state dose
            s, _ = pf._assimilate_one(model, None, True, s, st, restarting=restarting)
            return s, None

        state, _ = jax.lax.scan(step, state, history)
        deviation = theta_free - prior_mean[free]
        return 0.5 * deviation @ precision @ deviation - state.log_evidence

    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def hessian(theta_free, *args, step: float = 1e-4):
        """Central differences of the exact gradient (no second compilation; p is small)."""
        columns = []
        for j in range(theta_free.shape[0]):
            e = jnp.zeros_like(theta_free).at[j].set(step)
            columns.append((value_and_grad(theta_free + e, *args)[1] - value_and_grad(theta_free - e, *args)[1]) / (2 * step))
        return jnp.stack(columns, axis=1)

    return free, value_and_grad, hessian


def _fit(model: Model, options: Options, prior_mean, previous_mode, history: Steps, start_time):
    free, value_and_grad, hessian = _objective(model, options, pf.restarts(history))
    with jax.enable_x64(True):
        args = (jnp.asarray(prior_mean), Steps(*map(jnp.asarray, history)), jnp.float64(start_time))

        def fun(x):
            value, grad = value_and_grad(jnp.asarray(x), *args)
            return float(value), np.asarray(grad, np.float64)

        best = None
        for start in (prior_mean[free], previous_mode[free]):
            result = scipy.optimize.minimize(fun, np.asarray(start, np.float64), jac=True, method="L-BFGS-B", options={"maxiter": options.max_iterations})
            if best is None or result.fun < best.fun:
                best = result
        H = np.asarray(hessian(jnp.asarray(best.x), *args))
    mode = np.array(prior_mean, np.float64)
    mode[free] = best.x
    covariance = np.zeros((mode.size, mode.size))
    try:
        covariance[np.ix_(free, free)] = np.linalg.inv(0.5 * (H + H.T))
    except np.linalg.LinAlgError:
        covariance[np.ix_(free, free)] = np.asarray(model.population.omega)[np.ix_(free, free)]
    return mode, covariance, best.fun


def update(model: Model, options: Options, state: MapState, steps: Steps) -> MapState:
    history = Steps(*(np.asarray(a).copy() for a in state.history))
    n_steps = np.asarray(state.n_steps).copy()
    valid = np.asarray(steps.dose_valid) | np.asarray(steps.reading_valid)
    needed = int((n_steps + valid.sum(1)).max())
    if needed > history.dose_valid.shape[1]:
        width = bucket(needed)
        history = Steps(*(np.concatenate([a, np.zeros((a.shape[0], width - a.shape[1]), a.dtype)], axis=1) for a in history))
    mode, covariance, objective, time = (np.asarray(a).copy() for a in (state.mode, state.covariance, state.objective, state.time))
    for i in np.flatnonzero(valid.any(1)):
        for s in np.flatnonzero(valid[i]):
            for field, new in zip(history, steps):
                field[i, n_steps[i]] = new[i, s]
            n_steps[i] += 1
        if steps.reading_valid[i].any():
            mode[i], covariance[i], objective[i] = _fit(model, options, np.asarray(state.prior_mean[i]), mode[i], Steps(*(a[i] for a in history)), float(state.start_time[i]))
            time[i] = steps.reading_time[i][steps.reading_valid[i]].max()
    return state._replace(mode=mode, covariance=covariance, objective=objective, time=time, history=history, n_steps=n_steps)


def laplace_particles(model: Model, options: Options, state: MapState) -> pf.ParticleState:
    """Equal-weight particles θ_s ~ N(θ̂, Σ) replayed through each patient's dose history."""
    dtype = jnp.dtype(options.dtype)
    pf_options = pf.Options(n_particles=options.n_particles, dose_slots=options.dose_slots, dtype=options.dtype)
    particles = pf.initial_state(model, pf_options, np.asarray(state.mode), jnp.asarray(state.key), 0.0)
    particles = particles._replace(time=jnp.asarray(state.start_time, dtype))
    roots = np.stack([_sqrt_psd(c) for c in np.asarray(state.covariance)])

    def draw(key, mode, root):
        eta = jax.random.normal(jax.random.fold_in(key, 7), (options.n_particles, mode.shape[0]), dtype) @ root.T
        return mode + eta

    log_params = jax.vmap(draw)(jnp.asarray(state.key), jnp.asarray(state.mode, dtype), jnp.asarray(roots, dtype))
    particles = particles._replace(log_params=log_params, cache=jax.vmap(functools.partial(pf._prepare, model))(log_params))
    history = Steps(*(np.asarray(a) for a in state.history))
    history = history._replace(reading_value=np.zeros_like(history.reading_value, dtype), reading_censored=np.zeros_like(history.reading_censored))
    for s in range(history.dose_valid.shape[1]):
        step = history.step(s)
        if step.dose_valid.any() or step.reading_valid.any():
            particles, _ = pf.assimilate(model, particles, Steps(*(a.astype(dtype) if a.dtype.kind == "f" else a for a in step)))
    return particles._replace(log_weights=jnp.full_like(particles.log_weights, -np.log(options.n_particles)))


def laplace_log_evidence(model: Model, state: MapState) -> np.ndarray:
    """Laplace approximation of log p(readings so far) per patient (P,):

        log p(y) ≈ −J(θ̂) + ½ log|Σ̂| − ½ log|Ω|        (free parameters only)

    with J the objective above (its log-likelihood carries every normalising constant, its
    prior term none), Σ̂ the Laplace covariance. Exact for a model linear-Gaussian in log θ; 0
    before the first reading. A Σ̂ that is not positive definite counts as Ω (then −J)."""
    free = np.flatnonzero(model.population.random_mask())
    _, log_det_prior = np.linalg.slogdet(np.asarray(model.population.omega, np.float64)[np.ix_(free, free)])
    out = -np.asarray(state.objective, np.float64).copy()
    for i, covariance in enumerate(np.asarray(state.covariance, np.float64)):
        sign, log_det = np.linalg.slogdet(covariance[np.ix_(free, free)])
        out[i] += 0.5 * ((log_det if sign > 0 else log_det_prior) - log_det_prior)
    return out


def _sqrt_psd(matrix):
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return vectors * np.sqrt(np.clip(values, 0, None))


def forecast(model: Model, state: MapState, times, regimen, analyte, noise, levels, options: Options):
    return pf.forecast(model, laplace_particles(model, options, state), times, regimen, analyte, noise, levels)
