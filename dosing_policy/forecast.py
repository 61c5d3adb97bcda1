"""Exposure forecast: every particle's trajectory under each candidate regimen, continued from
the particle's *current* amounts (doses already given are in the state; infusions still
running at the decision time are finished from the dose history), never from steady state.

Times are a uniform grid ``t0 + step · i``, i = 0 … T−1, and regimen dose times must lie on
it (so ``start`` and ``interval`` are multiples of ``step``; durations are free).

Two paths give the same numbers:

* **superposition** (linear time-invariant dynamics, :class:`assimilation.LinearCompartments`):
  amounts are linear in the inputs, so per particle

      x_c(t) = x_free(t) + a_first,c · R_first,c(t) + a_rest,c · R_rest,c(t),

  where x_free continues the current state and the history, and R is the response to a unit
  dose train (a sum of time-shifted unit-dose responses U_d(τ), each computed exactly by
  the model's own ``propagate``). Candidates that differ only in amount share their R, so
  20 or 200 candidates cost little more than one.
* **stepping** (any :class:`assimilation.structure.Dynamics`, e.g. ODE models): each
  candidate's doses are appended to the history and the state is propagated grid point to
  grid point.

The result is the analyte's value (e.g. mg/L) at each grid time: shape (C, N, T).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from assimilation import Dose, LinearCompartments, Model
from assimilation.dosing import DoseTable, concatenate_tables
from assimilation.simulate import dose_table_of

from . import modal
from .regimen import Regimen
from .sample import PosteriorSample, normalised_weights

__all__ = ["Grid", "Plan", "ExposureForecast", "plan_regimens", "history_table", "forecast", "is_linear", "particle_cache"]


class Grid(NamedTuple):
    """Forecast times t0 + step · i for i < points (h)."""

    step: float = 0.5
    points: int = 145  # 72 h at 0.5 h

    @classmethod
    def covering(cls, horizon: float, step: float = 0.5) -> "Grid":
        return cls(step, int(round(horizon / step)) + 1)

    def offsets(self, dtype=jnp.float32) -> Float[Array, " T"]:
        return jnp.arange(self.points, dtype=dtype) * jnp.asarray(self.step, dtype)

    @property
    def horizon(self) -> float:
        return self.step * (self.points - 1)


class Plan(NamedTuple):
    """Candidates as unit dose trains on the grid (built on the host by :func:`plan_regimens`).

    Train s is a sum of unit doses of duration ``durations[shape_duration[s]]`` (h) starting at
    grid points; ``shifts[s]`` (T, T) is its shift-and-add matrix, shifts[s, t, j] = number of
    its doses started t − j grid steps before t, so train_s(t) = Σ_j shifts[s, t, j] · unit(j).
    Candidate c is ``first_amount[c]`` × train ``first_shape[c]`` + ``rest_amount[c]`` × train
    ``rest_shape[c]``.
    """

    durations: Float[Array, " D"]
    shifts: Float[Array, "S T T"]
    shape_duration: Int[Array, " S"]
    first_shape: Int[Array, " C"]
    first_amount: Float[Array, " C"]
    rest_shape: Int[Array, " C"]
    rest_amount: Float[Array, " C"]


class ExposureForecast(NamedTuple):
    times: Float[Array, " T"]  # h, absolute
    values: Float[Array, "C N T"]  # analyte (e.g. mg/L) per candidate, particle, time
    weights: Float[Array, " N"]  # normalised particle weights


def _grid_index(value: float, step: float, what: str) -> int:
    index = round(value / step)
    if abs(index * step - value) > 1e-6 * max(1.0, abs(value)):
        raise ValueError(f"{what} {value} h is not on the forecast grid (step {step} h)")
    return index


def plan_regimens(regimens: Sequence[Regimen], grid: Grid, dtype=jnp.float32) -> Plan:
    """Unit dose trains shared by the candidates (the same train for every amount)."""
    return _plan(tuple(regimens), grid, jnp.dtype(dtype).name)


@functools.lru_cache(maxsize=64)
def _plan(regimens: tuple[Regimen, ...], grid: Grid, dtype: str) -> Plan:
    """Cached: a service scores the same candidate set for every patient and every update, and
    building the plan on the host costs about as much as a tenth of scoring it."""
    durations: dict[float, int] = {}
    shapes: dict[tuple, int] = {}

    def shape(starts: tuple[int, ...], duration: float) -> int:
        d = durations.setdefault(float(duration), len(durations))
        return shapes.setdefault((starts, d), len(shapes))

    first_shape, first_amount, rest_shape, rest_amount = [], [], [], []
    for regimen in regimens:
        start = _grid_index(regimen.start, grid.step, "regimen start")
        interval = _grid_index(regimen.interval, grid.step, "dosing interval")
        if interval <= 0:
            raise ValueError(f"dosing interval must be positive, got {regimen.interval}")
        starts = [i for i in range(start, grid.points, interval)]
        first_shape.append(shape(tuple(starts[:1]), regimen.first_duration))
        first_amount.append(regimen.first_amount if starts else 0.0)
        rest_shape.append(shape(tuple(starts[1:]), regimen.duration))
        rest_amount.append(regimen.amount)
    T = grid.points
    shifts = np.zeros((len(shapes), T, T))
    which = np.zeros(len(shapes), np.int32)
    for (train, d), index in shapes.items():
        for start in train:
            shifts[index, np.arange(start, T), np.arange(0, T - start)] += 1.0
        which[index] = d
    return Plan(
        jnp.asarray(list(durations), dtype), jnp.asarray(shifts, dtype), jnp.asarray(which),
        jnp.asarray(first_shape, jnp.int32), jnp.asarray(first_amount, dtype),
        jnp.asarray(rest_shape, jnp.int32), jnp.asarray(rest_amount, dtype),
    )


def history_table(model: Model, doses: Sequence[Dose] | DoseTable, dtype=jnp.float32, slots: int | None = None,
                  now: float | None = None) -> DoseTable:
    """The dose history as a table whose slots count only from the state's time on (not
    fresh): a bolus before the state time is already in the amounts, an infusion running
    across it contributes its remainder. With ``now`` (and a model without lag times),
    doses fully delivered before ``now`` are left out of a list (they are in the state)."""
    if not isinstance(doses, DoseTable) and now is not None and model.lag_time is None:
        doses = [d for d in doses if (d.time >= now if d.duration <= 0 else d.time + d.duration > now)]
    if isinstance(doses, DoseTable):
        return doses._replace(fresh=jnp.zeros_like(doses.fresh))
    return _history_table(model, tuple(doses), jnp.dtype(dtype).name, slots)


@functools.lru_cache(maxsize=4096)
def _history_table(model: Model, doses: tuple[Dose, ...], dtype: str, slots: int | None) -> DoseTable:
    """Cached: the live service checks every reading against the same few recent doses, and
    building the table is a dozen small host-to-device copies (about half a millisecond)."""
    table = dose_table_of(model, list(doses), slots=slots, dtype=dtype)
    return table._replace(fresh=jnp.zeros_like(table.fresh))


def is_linear(model: Model) -> bool:
    return isinstance(model.dynamics, LinearCompartments)


def analyte_is_linear(model: Model, analyte: int) -> bool:
    """True when the analyte's prediction is linear in the amounts, f(θ, a·x + b·y) =
    a·f(θ, x) + b·f(θ, y) (checked numerically at random points; e.g. central / V)."""
    return _analyte_is_linear(model, analyte)


@functools.lru_cache(maxsize=None)
def _analyte_is_linear(model: Model, analyte: int) -> bool:
    with jax.ensure_compile_time_eval():  # may be first called while tracing
        return _linearity_probe(model, analyte)


def _linearity_probe(model: Model, analyte: int) -> bool:
    rng = np.random.default_rng(0)
    predict = model.analytes[analyte].predict
    params = model.parameters(jnp.asarray(model.typical_log_params(), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32))
    x, y = (jnp.asarray(rng.uniform(1, 100, model.n_compartments), params[model.population.names[0]].dtype) for _ in range(2))
    left = float(predict(params, 2.0 * x - 3.0 * y))
    right = 2.0 * float(predict(params, x)) - 3.0 * float(predict(params, y))
    return abs(left - right) <= 1e-4 * (abs(left) + abs(right) + 1e-6)


def _cache(model: Model, params, cache):
    return model.dynamics.prepare(params) if cache is None else cache


def particle_cache(model: Model, sample: PosteriorSample):
    """``model.dynamics.prepare`` of every particle (the sample's own cache when it has one).
    A separate vmap: fused into the forecast kernel, XLA ran the eigendecompositions ~5x slower."""
    if sample.cache is not None:
        return sample.cache
    return jax.vmap(lambda lp: model.dynamics.prepare(model.parameters(lp)))(sample.log_params)


class Components(NamedTuple):
    """Per particle: the free trajectory (current state + history) and the response to one
    unit dose of each duration; in analyte units when the analyte is linear in the amounts,
    else in amounts (a trailing compartment axis)."""

    free: Float[Array, "N T ..."]
    unit: Float[Array, "N D T ..."]


def _modal_components(model: Model, analyte: int, steps: tuple[int, ...] | None, step: float, sample: PosteriorSample,
                      cache, history: DoseTable, plan: Plan, offsets) -> Components:
    """Components (free (N, T), unit (N, D, T)) in analyte units by the formulas of
    :mod:`.modal`, all particles at once with the particle axis last (the per-particle set-up
    — parameters, F, lag, output weights — is vmapped; it is small). ``steps``: the
    durations in grid steps when all are on the grid and the model has no lag time (then
    the unit responses come from two shared tables), else None."""
    rates, vectors, inverse = cache  # (N, n), (N, n, n), (N, n, n)
    x0, t0 = sample.amounts, sample.time

    def setup(lp, vec):
        params = model.parameters(lp)
        F, lag = model.dose_attributes(params, x0.dtype)
        return F, lag, modal.output_weights(model.analytes[analyte].predict, params, vec)

    F, lag, o = jax.vmap(setup)(sample.log_params, vectors)  # (N, n) each
    z0 = jnp.sum(inverse * x0[:, None, :], axis=2)  # (N, n)
    rates_t = rates.T  # (n, N)
    decay = jnp.exp(rates_t[None] * offsets[:, None, None])  # (T, n, N)
    free = jnp.sum(decay * (z0 * o).T[None], axis=1)  # (T, N)
    start, duration, amount = jax.vmap(lambda l: modal.remaining_pulses(history, l, t0))(lag)  # (N, K)
    comp = history.compartment
    for slot in range(history.time.shape[-1]):
        b = (F[:, comp[slot]] * amount[:, slot])[:, None] * inverse[:, :, comp[slot]] * o  # (N, n) modal weights × output
        pulse = modal.pulse_response(rates_t, offsets, start[:, slot], duration[:, slot])  # (T, n, N)
        free = free + jnp.sum(pulse * b.T[None], axis=1)
    k = model.dose_compartment
    unit_b = (F[:, k][:, None] * inverse[:, :, k] * o).T  # (n, N)
    if steps is not None:
        unit = modal.grid_unit_responses(rates_t, decay, offsets, unit_b, steps, step)  # (D, T, N)
    else:
        unit = jax.vmap(lambda d: jnp.sum(modal.pulse_response(rates_t, offsets, lag[:, k], jnp.full_like(lag[:, k], d)) * unit_b[None], axis=1))(plan.durations)
    return Components(free.T, jnp.transpose(unit, (2, 0, 1)))


def linear_functional_modal(model: Model, analyte: int, shape_steps: tuple[int, ...], step: float, sample: PosteriorSample,
                            history: DoseTable, plan: Plan, offsets, weights: Float[Array, "T W"]) -> Float[Array, "C W N"]:
    """Σ_j weights[j, w] · f_c(τ_j) for every candidate (e.g. AUC per window) without building
    any trajectory: the weights are folded through each train's shifts (Q_s = shifts_sᵀ
    weights) and then through the unit-response formulas of :func:`modal.grid_unit_responses`,
    so the particle work is three matrix products with the tables E = e^{λτ} and φ(λ, τ).
    ``shape_steps``: the duration of each train in grid steps (static; no lag times)."""
    rates, vectors, inverse = particle_cache(model, sample)
    x0, t0 = sample.amounts, sample.time

    def setup(lp, vec):
        params = model.parameters(lp)
        F, lag = model.dose_attributes(params, x0.dtype)
        return F, lag, modal.output_weights(model.analytes[analyte].predict, params, vec)

    F, lag, o = jax.vmap(setup)(sample.log_params, vectors)
    rates_t = rates.T  # (n, N)
    decay = jnp.exp(rates_t[None] * offsets[:, None, None])  # (T, n, N)
    free = jnp.sum(decay * (jnp.sum(inverse * x0[:, None, :], axis=2) * o).T[None], axis=1)  # (T, N)
    start, duration, amount = jax.vmap(lambda l: modal.remaining_pulses(history, l, t0))(lag)
    for slot in range(history.time.shape[-1]):
        c = history.compartment[slot]
        b = (F[:, c] * amount[:, slot])[:, None] * inverse[:, :, c] * o
        free = free + jnp.sum(modal.pulse_response(rates_t, offsets, start[:, slot], duration[:, slot]) * b.T[None], axis=1)
    k = model.dose_compartment
    unit_b = (F[:, k][:, None] * inverse[:, :, k] * o).T  # (n, N)
    during = jnp.sum(unit_b[None] * modal.phi_from_decay(rates_t[None], offsets[:, None, None], decay), axis=1)  # (T, N): Σ w φ(λ, τ)
    bolus = jnp.sum(unit_b[None] * decay, axis=1)  # (T, N): Σ w e^{λτ}

    T, W = weights.shape
    j = jnp.arange(T)[:, None]
    folded = jnp.einsum("stj,tw->sjw", plan.shifts, weights)  # (S, T, W)
    q_during, q_after, q_bolus, scale, tail = [], [], [], [], []
    for s, dd in enumerate(shape_steps):
        q = folded[s]
        zero = jnp.zeros_like(q)
        if dd == 0:
            q_during.append(zero), q_after.append(zero), q_bolus.append(jnp.where(j >= 1, q, 0.0))
            scale.append(1.0), tail.append(jnp.zeros_like(unit_b))
            continue
        d = dd * step
        q_during.append(jnp.where(j <= dd, q, 0.0))
        shifted = jnp.concatenate([q[dd:], jnp.zeros((min(dd, T), W), q.dtype)])[:T]  # shifted[i] = q[i + dd]
        q_after.append(jnp.where(j >= 1, shifted, 0.0))
        q_bolus.append(zero)
        scale.append(1.0 / d)
        tail.append(unit_b * modal.phi(rates_t, d))  # (n, N): Σ_n c_n E[j − dd, n] after the infusion
    per_train = (
        jnp.einsum("sjw,jN->swN", jnp.stack(q_during), during)
        + jnp.sum(jnp.einsum("siw,inN->swnN", jnp.stack(q_after), decay) * jnp.stack(tail)[:, None], axis=2)
        + jnp.einsum("sjw,jN->swN", jnp.stack(q_bolus), bolus)
    ) * jnp.asarray(scale, weights.dtype)[:, None, None]  # (S, W, N)
    free_metric = weights.T @ free  # (W, N)
    return (free_metric[None] + plan.first_amount[:, None, None] * per_train[plan.first_shape]
            + plan.rest_amount[:, None, None] * per_train[plan.rest_shape])


def shape_steps(model: Model, plan: Plan, grid: Grid) -> tuple[int, ...] | None:
    """Each train's infusion duration in grid steps (static), or None (see :func:`duration_steps`)."""
    steps = duration_steps(model, plan, grid)
    return None if steps is None else tuple(steps[i] for i in np.asarray(plan.shape_duration))


def duration_steps(model: Model, plan: Plan, grid: Grid) -> tuple[int, ...] | None:
    """The plan's infusion durations in grid steps, or None when one is off the grid or the
    model has lag times (then the general pulse formula is used)."""
    if model.lag_time is not None:
        return None
    steps = []
    for d in np.asarray(plan.durations, np.float64):
        index = round(d / grid.step)
        if abs(index * grid.step - d) > 1e-6 * max(1.0, d):
            return None
        steps.append(int(index))
    return tuple(steps)


def _particle_components(model: Model, analyte: int, in_analyte: bool, log_params, x0, t0, cache, history: DoseTable, plan: Plan, offsets):
    """Components of one particle by the model's own ``propagate`` (any linear analyte or not)."""
    params = model.parameters(log_params)
    cache = _cache(model, params, cache)
    F, lag = model.dose_attributes(params, x0.dtype)
    propagate = model.dynamics.propagate
    predict = jax.vmap(lambda xi: model.analytes[analyte].predict(params, xi))
    free = jax.vmap(lambda tau: propagate(params, cache, x0, t0, t0 + tau, history, F, lag))(offsets)  # (T, n)
    zero = jnp.zeros_like(x0)
    target = jnp.array([model.dose_compartment], jnp.int32)

    def unit_response(duration):
        table = DoseTable(jnp.zeros(1, x0.dtype), jnp.ones(1, x0.dtype), duration[None], target, jnp.ones(1, bool), jnp.int32(0))
        x = jax.vmap(lambda tau: propagate(params, cache, zero, jnp.zeros((), x0.dtype), tau, table, F, lag))(offsets)
        return predict(x) if in_analyte else x

    unit = jax.vmap(unit_response)(plan.durations)  # (D, T[, n])
    return Components(predict(free) if in_analyte else free, unit)


def superposed_components(model: Model, analyte: int, sample: PosteriorSample, history: DoseTable, plan: Plan, offsets,
                          in_analyte: bool, modal_path: bool = True, steps: tuple[int, ...] | None = None, step: float = 0.0) -> Components:
    """Free trajectory and unit responses of every particle; in analyte units (by the modal
    formulas when ``modal_path``) when ``in_analyte``, else in amounts. ``steps``/``step``:
    see :func:`duration_steps` (static)."""
    if in_analyte and modal_path:
        return _modal_components(model, analyte, steps, step, sample, particle_cache(model, sample), history, plan, offsets)
    else:
        one = functools.partial(_particle_components, model, analyte, in_analyte)
    cache = particle_cache(model, sample)
    return jax.vmap(one, in_axes=(0, 0, None, 0, None, None, None))(
        sample.log_params, sample.amounts, sample.time, cache, history, plan, offsets)


def trains(components: Components, plan: Plan) -> Float[Array, "N S T ..."]:
    """Unit dose trains: shift-and-add of the unit responses (a matrix product per train)."""
    unit = jnp.take(components.unit, plan.shape_duration, axis=1)  # (N, S, T[, n])
    return jnp.einsum("stj,nsj...->nst...", plan.shifts, unit)


def combine(components: Components, plan: Plan) -> Float[Array, "C N T ..."]:
    """Candidate trajectories free + a_first · R_first + a_rest · R_rest."""
    extra = (None,) * (components.free.ndim - 2)
    first = plan.first_amount[(slice(None), None, None, *extra)]
    rest = plan.rest_amount[(slice(None), None, None, *extra)]
    train = jnp.moveaxis(trains(components, plan), 1, 0)  # (S, N, T[, n])
    return components.free[None] + first * train[plan.first_shape] + rest * train[plan.rest_shape]


def linear_functional_of_candidates(components: Components, plan: Plan, weights: Float[Array, "T W"]) -> Float[Array, "C W N"]:
    """Σ_t weights[t, w] · f_c(t) for every candidate without building its trajectory:
    the functional of the free part plus the amounts times the functional of each train,
    with the trains' functionals folded into the weights (Q_s = shifts_sᵀ · weights)."""
    folded = jnp.einsum("stj,tw->sjw", plan.shifts, weights)  # (S, T, W)
    unit = jnp.take(components.unit, plan.shape_duration, axis=1)  # (N, S, T)
    per_train = jnp.einsum("nsj,sjw->swn", unit, folded)  # (S, W, N)
    free = (components.free @ weights).T  # (W, N)
    return free[None] + plan.first_amount[:, None, None] * per_train[plan.first_shape] + plan.rest_amount[:, None, None] * per_train[plan.rest_shape]


def superposed_values(model: Model, analyte: int, sample: PosteriorSample, history: DoseTable, plan: Plan, offsets,
                      modal_path: bool = True, steps: tuple[int, ...] | None = None, step: float = 0.0) -> Float[Array, "C N T"]:
    linear = analyte_is_linear(model, analyte)
    components = superposed_components(model, analyte, sample, history, plan, offsets, linear, modal_path, steps, step)
    values = combine(components, plan)
    if linear:
        return values
    predict = model.analytes[analyte].predict
    over_time = jax.vmap(lambda lp, xs: jax.vmap(lambda x: predict(model.parameters(lp), x))(xs))
    return jax.vmap(lambda xs: over_time(sample.log_params, xs))(values)


def _stepped_particle(model: Model, analyte: int, log_params, x0, t0, cache, tables: DoseTable, offsets):
    """Analyte values (C, T) of one particle, stepping every candidate's full dose table."""
    params = model.parameters(log_params)
    cache = _cache(model, params, cache)
    F, lag = model.dose_attributes(params, x0.dtype)
    predict = model.analytes[analyte].predict

    def one_candidate(table):
        if hasattr(model.dynamics, "trajectory"):  # one solve over the horizon (ODE models)
            states = model.dynamics.trajectory(params, cache, x0, t0, t0 + offsets[1:], table, F, lag)
            return jnp.concatenate([predict(params, x0)[None], jax.vmap(lambda x: predict(params, x))(states)])

        def advance(carry, t1):
            x, t = carry
            x = model.dynamics.propagate(params, cache, x, t, t1, table, F, lag)
            return (x, t1), predict(params, x)

        _, rest = jax.lax.scan(advance, (x0, t0), t0 + offsets[1:])
        return jnp.concatenate([predict(params, x0)[None], rest])

    return jax.vmap(one_candidate)(tables)


def stepped_values(model: Model, analyte: int, sample: PosteriorSample, tables: DoseTable, offsets) -> Float[Array, "C N T"]:
    one = functools.partial(_stepped_particle, model, analyte)
    cache = particle_cache(model, sample)
    values = jax.vmap(one, in_axes=(0, 0, None, 0, None, None))(sample.log_params, sample.amounts, sample.time, cache, tables, offsets)
    return jnp.swapaxes(values, 0, 1)


@functools.lru_cache(maxsize=None)
def _superposed_jit(model: Model, analyte: int, modal_path: bool, steps, step: float):
    return jax.jit(functools.partial(superposed_values, model, analyte, modal_path=modal_path, steps=steps, step=step))


@functools.lru_cache(maxsize=None)
def _stepped_jit(model: Model, analyte: int):
    return jax.jit(functools.partial(stepped_values, model, analyte))


def candidate_tables(model: Model, history: DoseTable, regimens: Sequence[Regimen], now: float, grid: Grid) -> DoseTable:
    """History + each candidate's doses, one table per candidate (C, K_hist + K_max), not fresh."""
    per = [r.doses(now, grid.horizon + 1e-6, model.dose_compartment) for r in regimens]
    width = max([1] + [len(d) for d in per])
    dtype = history.time.dtype
    tables = [history_table(model, dose_table_of(model, d, slots=width, dtype=dtype)) for d in per]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *tables)
    return jax.vmap(lambda t: concatenate_tables(history, t))(stacked)


def forecast(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, regimens: Sequence[Regimen],
             grid: Grid = Grid(), analyte: int | str = 0, method: str = "auto") -> ExposureForecast:
    """Analyte trajectories (C, N, T) of every particle under each regimen, from ``sample.time``.

    ``history``: doses already recorded (absolute times). ``method``: "superposition"
    (linear models; modal formulas for a linear analyte), "propagate-superposition" (linear
    models, unit responses by ``propagate``), "stepping" (any model), or "auto"
    (superposition when the model is linear).
    """
    dtype = sample.amounts.dtype
    table = history_table(model, history, dtype, now=float(sample.time))
    index = model.analyte_index(analyte)
    offsets = grid.offsets(dtype)
    if method == "auto":
        method = "superposition" if is_linear(model) else "stepping"
    if method in ("superposition", "propagate-superposition"):
        if not is_linear(model):
            raise ValueError(f"superposition needs linear dynamics; model {model.name!r} is not")
        modal_path = method == "superposition"
        plan = plan_regimens(regimens, grid, dtype)
        steps = duration_steps(model, plan, grid)
        values = _superposed_jit(model, index, modal_path, steps, grid.step)(sample, table, plan, offsets)
    elif method == "stepping":
        tables = candidate_tables(model, table, regimens, float(sample.time), grid)
        values = _stepped_jit(model, index)(sample, tables, offsets)
    else:
        raise ValueError(f"unknown forecast method {method!r}")
    return ExposureForecast(sample.time + offsets, values, normalised_weights(sample.log_weights))
