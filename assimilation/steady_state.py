"""Steady state of a dose train: the amounts just before the last of an endless series of doses.

A dose of ``a`` mg into compartment c every τ h (bioavailability F and lag L of c; for an
infusion, duration D) is a periodic input u(t) = u(t + τ). The *trough* of the train, the
state just before one of its doses (a left limit), is the fixed point of the one-period map
P(x) = the state at τ from x at 0 under that input. NONMEM's SS=1 dose record is this trough
followed by the record's own dose; SS=2 adds the trough to what the body already holds.

* **Linear dynamics** (:class:`~assimilation.structure.LinearCompartments`), closed form per
  particle: P(x) = Φ x + b with Φ = e^{Kτ} and b the state at τ after one period of the input
  from zero amounts, so

      x_ss = (I − Φ)⁻¹ b.

  Φ's columns are the dynamics' own propagation of the unit vectors over τ (no dose); b is
  the propagation of zero amounts over [0, τ) with the train's doses at 0, −τ, …, −(M−1)τ
  counted from 0 on, which is the input of one period including what earlier doses still
  deliver in it (an infusion longer than τ, a lag longer than τ − D): exact when
  L + D ≤ M τ, M = :data:`PERIODS`. The relative error grows like ε / (1 − ρ), ρ the largest
  e^{λτ} (how much the train accumulates): about 1e-5 in float32 at ρ = 0.99.
* **Any other dynamics** (:class:`~assimilation.structure.OdeCompartments`): an explicit dose
  train, x ← P(x) from the model's start amounts until one more period changes no dosed state
  by more than ``rtol·|x| + atol`` (rtol 1e-6, or 64 ε when that is larger, i.e. 7.6e-6 in
  float32; atol the solver's), at most :data:`MAX_PERIODS` periods; a particle that has not
  converged by then gets NaN amounts, which the filters treat as a failed solve (the particle
  filter gives it zero weight). A train rather than a closed form because a nonlinear system
  has no superposition: its periodic orbit is the limit that repeated dosing reaches (from
  any start, for a stable system; the vector field must not depend on t). The fixed point is
  differentiated implicitly (a reverse-mode rule that solves with the one-period map's
  Jacobian; diffrax's solves have no forward mode), so MAP's gradient needs no derivative
  through the iterations. SS=2 needs superposition and is refused for these.

Only the states that the dosed compartment can reach through the model's couplings take the
steady state (the sparsity of the rate matrix, or of the vector field's Jacobian, at the
typical parameters); the others are untouched by any dose history (a biosensor's gain) and
keep their values. The reached states must not depend on the others (checked when a
steady-state dose is packed). Doses of the train that are still arriving at the trough's time
(a lag or an infusion longer than the interval) are put in the patient's dose table, so that
they deliver the rest of their drug afterwards.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .dosing import DoseTable
from .structure import LinearCompartments

__all__ = ["PERIODS", "MAX_PERIODS", "reached_states", "check_steady_state", "trough", "train_table"]

PERIODS = 4
"""Dose intervals over which one dose of a train may still deliver drug (lag + duration ≤
PERIODS · τ): the earlier doses whose input is counted in one period."""

MAX_PERIODS = 2000
"""Most periods of an explicit dose train (ODE dynamics) before a particle counts as failed."""


@functools.lru_cache(maxsize=None)
def _couplings(model) -> np.ndarray:
    """(n, n) bool: [j, i] when state j's rate of change depends on state i, at the typical
    parameters (and for a vector field at a generic state, the start amounts + 0.37)."""
    params = model.parameters(jnp.asarray(model.typical_log_params(), jnp.float32))
    dynamics = model.dynamics
    if isinstance(dynamics, LinearCompartments):
        matrix = np.asarray(dynamics.rate_matrix(params))
    else:
        x = model.amounts_at_start(jnp.float32) + 0.37
        matrix = np.asarray(jax.jacfwd(lambda amounts: dynamics.vector_field(0.0, amounts, params))(x))
    return (matrix != 0) | ~np.isfinite(matrix)


@functools.lru_cache(maxsize=None)
def reached_states(model) -> np.ndarray:
    """(n, n) bool: row c marks the states a dose into compartment c reaches (c included)."""
    edges = _couplings(model)
    n = edges.shape[0]
    reach = np.eye(n, dtype=bool)
    for _ in range(n):
        reach = reach | ((reach.astype(int) @ edges.T.astype(int)) > 0)
    return reach


def check_steady_state(model, dose) -> None:
    """Raise ValueError, saying why, for a steady-state dose (``events.SteadyState``) that
    this module cannot compute for ``model``."""
    if not (dose.interval > 0 and np.isfinite(dose.interval)):
        raise ValueError(f"steady-state dose at t={dose.time} h: the interval must be > 0 h, got {dose.interval!r}")
    if not dose.amount > 0:
        raise ValueError(f"steady-state dose at t={dose.time} h: the amount must be > 0 mg, got {dose.amount!r}")
    if dose.duration > PERIODS * dose.interval:
        raise ValueError(f"steady-state dose at t={dose.time} h: an infusion of {dose.duration} h lasts more than "
                         f"{PERIODS} intervals of {dose.interval} h")
    if model.occasions is not None:
        raise ValueError(f"model {model.name!r} has inter-occasion variability: a steady state would need the κ of the "
                         "occasions of its dose train, which the filters do not keep")
    if dose.additive and not isinstance(model.dynamics, LinearCompartments):
        raise ValueError(f"model {model.name!r} is not linear: an additive steady state (NONMEM SS=2) adds a dose "
                         "train's amounts by superposition, which holds for linear dynamics only")
    c = model.compartment_index(dose.compartment)
    reached = reached_states(model)[c]
    inputs = _couplings(model)[np.ix_(reached, ~reached)].any(axis=0)
    if inputs.any():
        names = [model.compartments[i] for i in np.flatnonzero(~reached)[inputs]]
        raise ValueError(f"model {model.name!r}: the states a dose into {model.compartments[c]!r} reaches depend on "
                         f"{names}, which it does not reach, so its dose train has no steady state of its own")


def train_table(amount, duration, compartment, interval, dtype) -> DoseTable:
    """The train's doses at 0, −τ, …, −(PERIODS−1)τ, counted from the start of a step (not fresh)."""
    k = jnp.arange(PERIODS, dtype=dtype)
    full = jnp.ones(PERIODS, dtype)
    return DoseTable(-interval * k, amount * full, duration * full, jnp.full(PERIODS, compartment, jnp.int32),
                     jnp.zeros(PERIODS, bool), jnp.int32(PERIODS))


def _empty_table(dtype) -> DoseTable:
    zeros = jnp.zeros(0, dtype)
    return DoseTable(zeros, zeros, zeros, jnp.zeros(0, jnp.int32), jnp.zeros(0, bool), jnp.int32(0))


def _closed_form(model, params, cache, reached, table: DoseTable, interval, F, lag):
    """(I − Φ)⁻¹ b on the reached states, 0 elsewhere (see the module docstring)."""
    dynamics, dtype = model.dynamics, table.amount.dtype
    n = model.n_compartments
    eye = jnp.eye(n, dtype=dtype)
    b = dynamics.propagate(params, cache, jnp.zeros(n, dtype), jnp.zeros((), dtype), interval, table, F, lag)
    empty = _empty_table(dtype)
    phi = jnp.stack([dynamics.propagate(params, cache, eye[j], jnp.zeros((), dtype), interval, empty, F, lag) for j in range(n)], axis=1)
    # the unreached rows and columns become identity: the reached block is solved on its own
    system = jnp.where(reached[:, None] & reached[None, :], eye - phi, eye)
    return jnp.linalg.solve(system, jnp.where(reached, b, 0.0))


def _dose_train(model, params, cache, amounts, reached, table: DoseTable, interval, F, lag, active):
    """The fixed point of the one-period map on the reached states, iterated from the start
    amounts; the unreached states keep ``amounts``."""
    start = jnp.where(reached, model.amounts_at_start(table.amount.dtype), amounts)
    return _fixed_point(model, params, cache, amounts, start, reached, table, interval, F, lag, active)


def _residual(model, z, params, cache, amounts, reached, table, interval, F, lag):
    """P(z) − z on the reached states and z − amounts on the others: zero at the steady state,
    with a regular Jacobian whatever the unreached states do."""
    period = model.dynamics.propagate(params, cache, z, jnp.zeros((), z.dtype), interval, table, F, lag)
    return jnp.where(reached, period - z, z - amounts)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fixed_point(model, params, cache, amounts, start, reached, table, interval, F, lag, active):
    dtype = start.dtype
    rtol = max(1e-6, 64 * float(jnp.finfo(dtype).eps))
    atol = float(getattr(model.dynamics, "atol", 0.0))

    def unfinished(carry):
        k, _, done = carry
        return (k < MAX_PERIODS) & ~done

    def one_period(carry):
        k, z, _ = carry
        change = _residual(model, z, params, cache, amounts, reached, table, interval, F, lag)
        z = z + change
        done = jnp.all(~reached | (jnp.abs(change) <= rtol * jnp.abs(z) + atol))
        return k + 1, z, done

    # a row without a train is done at once: under vmap the loop runs until every row is
    _, z, done = jax.lax.while_loop(unfinished, one_period, (0, start, ~active))
    return jnp.where(done, z, jnp.nan)


def _fixed_point_forward(model, params, cache, amounts, start, reached, table, interval, F, lag, active):
    x = _fixed_point(model, params, cache, amounts, start, reached, table, interval, F, lag, active)
    return x, (x, params, cache, amounts, start, reached, table, interval, F, lag, active)


def _fixed_point_backward(model, saved, cotangent):
    """Implicit function theorem at the root of g(x, θ) = :func:`_residual`: dx/dθ = −G_x⁻¹ G_θ,
    so θ̄ = −G_θᵀ u with G_xᵀ u = x̄; G_x from n vector-Jacobian products (n is small). The dose
    train's own numbers (interval, table, start) are data: zero cotangents."""
    x, params, cache, amounts, start, reached, table, interval, F, lag, active = saved

    def g(z, params, cache, amounts, F, lag):
        return _residual(model, z, params, cache, amounts, reached, table, interval, F, lag)

    _, pullback = jax.vjp(g, x, params, cache, amounts, F, lag)
    rows = jnp.stack([pullback(e)[0] for e in jnp.eye(x.shape[0], dtype=x.dtype)])  # G_x
    u = jnp.linalg.solve(rows.T, cotangent)
    _, params_bar, cache_bar, amounts_bar, F_bar, lag_bar = pullback(-u)
    zero = functools.partial(jax.tree.map, _zero_cotangent)
    return params_bar, cache_bar, amounts_bar, zero(start), zero(reached), zero(table), zero(interval), F_bar, lag_bar, zero(active)


def _zero_cotangent(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(leaf.shape, jax.dtypes.float0)


_fixed_point.defvjp(_fixed_point_forward, _fixed_point_backward)


def trough(model, params, cache, amounts: Float[Array, " n"], amount, duration, compartment, interval, additive: Bool[Array, ""],
           F: Float[Array, " n"], lag: Float[Array, " n"], active=True) -> Float[Array, " n"]:
    """One particle's amounts at the left limit of a steady-state dose (``additive``: SS=2);
    NaN where this particle's lag and the duration exceed PERIODS intervals. ``active`` False:
    the caller discards the result (a batch row without a train), so no train is iterated."""
    dtype = amounts.dtype
    reached = jnp.asarray(reached_states(model))[compartment]
    table = train_table(jnp.asarray(amount, dtype), jnp.asarray(duration, dtype), compartment, jnp.asarray(interval, dtype), dtype)
    if isinstance(model.dynamics, LinearCompartments):
        train = _closed_form(model, params, cache, reached, table, interval, F, lag)
        steady = jnp.where(reached, jnp.where(additive, amounts + train, train), amounts)
    else:  # additive trains were refused when packed
        steady = _dose_train(model, params, cache, amounts, reached, table, interval, F, lag, jnp.asarray(active))
    fits = lag[compartment] + duration <= PERIODS * interval
    return jnp.where(fits, steady, jnp.nan)
