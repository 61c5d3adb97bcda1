"""Bootstrap particle filter over the augmented state (log θ, compartment amounts).

Per patient: N particles, each a log-parameter vector drawn from the population prior and the
compartment amounts it implies. A reading y multiplies the weights by p(y | f(θ, x)); when the
effective sample size drops below ``threshold · N`` the cloud is resampled (systematic) and the
static parameters are refreshed with the Liu–West kernel.

Throughput design: the reweighting step draws no random numbers and is vmapped over all
patients; the patients that need resampling are gathered on the host and resampled by a
separate jitted call (random numbers are ~60 % of the cost of a naive PF step, and under vmap
``lax.cond`` would pay for both branches for every patient).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Bool, Float, Int

from .dosing import DoseTable, compact, concatenate_tables, empty_dose_table, may_deliver, record_dose, still_delivering
from .events import Steps, bucket
from .model import Model
from .occasions import last_dose_times, occasion_starts, with_fresh_kappa
from .resampling import effective_sample_size, liu_west_move, systematic_resample, weighted_quantiles
from .simulate import predict_readings
from .steady_state import PERIODS, trough

__all__ = ["ParticleState", "Options", "Forecast", "initial_state", "assimilate", "resample", "forecast", "reading_weight"]


class Options(NamedTuple):
    n_particles: int = 1000
    dose_slots: int = 4  # doses that may be in flight at once (ring buffer)
    threshold: float = 0.5  # resample when ESS < threshold · N
    discount: float = 0.98  # Liu–West δ; a = (3δ−1)/(2δ)
    dtype: str = "float32"


class ParticleState(NamedTuple):
    """Arrays shaped (patients, particles, ...); patients padded to a power of two."""

    log_params: Float[Array, "P N p"]
    amounts: Float[Array, "P N n"]
    cache: Any  # per-particle cache of the dynamics (e.g. modes), leading axes (P, N); () if not kept
    log_weights: Float[Array, "P N"]  # normalised
    time: Float[Array, " P"]  # h; amounts are left limits at this time
    doses: DoseTable  # (P, K)
    key: Array  # (P, 2) uint32 raw threefry keys, one per patient
    log_evidence: Float[Array, " P"]  # log p(readings so far)
    lost_dose: Bool[Array, " P"]  # a dose slot was overwritten while still delivering
    resamples: Int[Array, " P"]
    last_reading: Float[Array, "P A"]  # h; time of the latest reading of each analyte (−inf: none)


class Forecast(NamedTuple):
    """Predictive distribution of an analyte at ``times`` for each patient."""

    times: Float[Array, "P T"]
    mean: Float[Array, "P T"]
    levels: Float[Array, " Q"]
    quantiles: Float[Array, "P Q T"]
    samples: Float[Array, "P S T"]


def _caches(model: Model) -> bool:
    return getattr(model.dynamics, "cache_in_state", True)


def _prepare(model: Model, log_params):
    """The per-particle cache kept in filter states: ``dynamics.prepare`` of every particle, or
    nothing when the dynamics recompute it more cheaply than a state can carry it."""
    if not _caches(model):
        return ()
    return jax.vmap(lambda lp: model.dynamics.prepare(model.parameters(lp)))(log_params)


@functools.lru_cache(maxsize=None)
def _prior_draw_jit(model: Model, n_particles: int, dtype: str):
    """Jitted (prior means (P, p), keys (P, 2)) -> (log θ (P, N, p), cache); one compile per shape."""
    root = np.asarray(model.prior_sqrt(), dtype)  # numpy: a constant, not a tracer, if first built under a trace

    def one(mean, key):
        _, draw = jax.random.split(key)
        eta = jax.random.normal(draw, (n_particles, root.shape[0]), dtype) @ root.T
        log_params = mean.astype(dtype) + eta
        return log_params, _prepare(model, log_params)

    return jax.jit(jax.vmap(one))


def initial_state(model: Model, options: Options, prior_means: np.ndarray, keys: Array, time: float = 0.0) -> ParticleState:
    """Particles from the prior N(log θ_typical + covariate shift, Ω); ``prior_means`` (P, p)."""
    dtype = jnp.dtype(options.dtype)
    n_rows, n = prior_means.shape[0], options.n_particles
    log_params, cache = _prior_draw_jit(model, n, options.dtype)(jnp.asarray(prior_means, dtype), keys)
    table = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_rows, *a.shape)), empty_dose_table(options.dose_slots, dtype))
    return ParticleState(
        log_params=log_params,
        amounts=jnp.broadcast_to(model.amounts_at_start(dtype), (n_rows, n, model.n_compartments)),
        cache=cache,
        log_weights=jnp.full((n_rows, n), -np.log(n), dtype),
        time=jnp.full((n_rows,), time, dtype),
        doses=table,
        key=jnp.array(keys),  # a copy: update(donate=True) may reuse the state's buffers, never the caller's keys
        log_evidence=jnp.zeros((n_rows,), dtype),
        lost_dose=jnp.zeros((n_rows,), bool),
        resamples=jnp.zeros((n_rows,), jnp.int32),
        last_reading=no_readings(model, dtype, n_rows),
    )


def no_readings(model: Model, dtype, n_rows: int | None = None) -> Float[Array, "P A"]:
    """``last_reading`` of a patient who has had no reading of any analyte yet."""
    shape = (len(model.analytes),) if n_rows is None else (n_rows, len(model.analytes))
    return jnp.full(shape, -jnp.inf, dtype)


def reading_weight(model: Model, last_reading: Float[Array, " A"], step: Steps) -> tuple[Float[Array, ""], Float[Array, " A"]]:
    """The step's reading's likelihood weight min(1, Δt / persistence) (see ``Analyte.persistence_h``)
    and ``last_reading`` after the step. Weight 1 for analytes whose errors do not persist."""
    persistence = [analyte.persistence_h for analyte in model.analytes]
    valid, analyte, time = step.reading_valid, step.reading_analyte, step.reading_time
    last = jnp.where(valid, last_reading.at[analyte].set(time), last_reading)
    if not any(persistence):
        return jnp.ones((), last_reading.dtype), last
    tau = jnp.asarray(persistence, last_reading.dtype)[analyte]
    gap = jnp.maximum(time - last_reading[analyte], 0.0)  # inf before the first reading: weight 1
    weight = jnp.where(tau > 0, jnp.minimum(gap / jnp.where(tau > 0, tau, 1.0), 1.0), 1.0)
    return weight, last


def reading_log_likelihood(model: Model, params, amounts, analyte, value, censored, may_be_censored: bool = True):
    """log p(reading | particle) for one particle: density, or log P(y < LLOQ) if censored;
    −∞ for a particle whose amounts are NaN (a failed ODE solve), which drops it.
    ``may_be_censored=False`` (static) leaves the censored branch out: under vmap both branches
    of a ``where`` are computed, and log Φ costs ~10 % of a particle-filter step."""
    predictions = predict_readings(model, params, amounts)

    def branch(index):
        error = model.analytes[index].error
        f = predictions[index]
        if not may_be_censored:
            return error.log_likelihood(value, f)
        return jnp.where(censored, error.log_cdf(value, f), error.log_likelihood(value, f))

    log_lik = branch(0) if len(model.analytes) == 1 else jnp.stack([branch(i) for i in range(len(model.analytes))])[analyte]
    return jnp.where(jnp.isnan(log_lik), -jnp.inf, log_lik)


def propagate_particles(model: Model, log_params, cache, amounts, t0, t1, doses, boluses_only: bool = False):
    """``boluses_only`` (static): no slot of ``doses`` is an infusion (see :func:`dose_terms`)."""
    closed_form = {"boluses_only": True} if boluses_only else {}

    def one(lp, c, x):
        params = model.parameters(lp)
        c = c if _caches(model) else model.dynamics.prepare(params)
        F, lag = model.dose_attributes(params, x.dtype)
        return model.dynamics.propagate(params, c, x, t0, t1, doses, F, lag, **closed_form)

    return jax.vmap(one)(log_params, cache, amounts)


def lag_range(model: Model, log_params: Float[Array, "N p"]) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Smallest and largest lag time (h) of each compartment over the particles (zeros without lag)."""
    if model.lag_time is None:
        zeros = jnp.zeros(model.n_compartments, log_params.dtype)
        return zeros, zeros
    lag = jax.vmap(lambda lp: model.dose_attributes(model.parameters(lp), lp.dtype)[1])(log_params)
    return lag.min(0), lag.max(0)


def _record(state_doses: DoseTable, lag_high, step: Steps):
    """Record the step's dose; flag if it overwrites a slot whose drug has not fully arrived
    under some particle's lag (the latest lag is the one that delivers last)."""
    slot = state_doses.cursor % state_doses.time.shape[-1]
    busy = still_delivering(state_doses, lag_high, step.dose_time)[slot]
    table = record_dose(state_doses, step.dose_time, step.dose_amount, step.dose_duration, step.dose_compartment, step.dose_valid)
    return table, step.dose_valid & busy


def step_target_time(state_time, step: Steps):
    """Time a step moves the state to: the reading's time, else the dose's, never backwards.

    Propagating on dose-only steps too keeps the dose ring buffer small: once the state has
    passed a dose's end, overwriting its slot loses nothing.
    """
    target = jnp.where(step.reading_valid, step.reading_time, jnp.where(step.dose_valid, step.dose_time, state_time))
    return jnp.maximum(target, state_time)


def _delivering(model: Model, state: ParticleState, step: Steps):
    """(dose table with the step's dose recorded, whether that lost a dose, the step's target
    time, which slots may deliver drug between the state's time and the target)."""
    low, high = lag_range(model, state.log_params)
    doses, lost = _record(state.doses, high, step)
    target = step_target_time(state.time, step)
    return doses, lost, target, may_deliver(doses, low, high, state.time, target)


@functools.lru_cache(maxsize=None)
def _delivering_jit(model: Model):
    """(most slots delivering in any patient, whether any delivering slot is an infusion)."""

    def one(state, step):
        doses, _, _, delivering = _delivering(model, state, step)
        return delivering.sum(), (delivering & (doses.duration > 0)).any()

    def batch(state, step):
        counts, infusions = jax.vmap(one)(state, step)
        return counts.max(), infusions.any()

    return jax.jit(batch)


COMPACT_MIN_ROWS = 64
"""Smallest batch whose steps propagate through the delivering dose slots only. Each slot
count is a kernel of its own, compiled in seconds (tens of seconds for an ODE model); a batch
smaller than this spends less time in a step than in a compile, so it keeps one kernel."""


def dose_terms(model: Model, state: ParticleState, step: Steps) -> tuple[int | None, bool]:
    """The static shape of the step's dose terms for every patient of the batch: (slots,
    boluses_only).

    ``slots``: how many dose terms the propagation needs: 0, or the next power of two ≥ the
    most slots delivering in any patient (at most K), so that a kernel is compiled for a few
    sizes only; None (all K slots) for a batch of fewer than ``COMPACT_MIN_ROWS`` rows. Most
    steps of a stream need 0 or 1 of the K: the state was propagated past every dose that has
    finished delivering. ``boluses_only``: none of the delivering slots is an infusion and the
    dynamics have a closed form for boluses (``closed_form_boluses``), which the step then takes."""
    if state.time.shape[0] < COMPACT_MIN_ROWS:
        return None, False
    count, infusions = (int(value) for value in _delivering_jit(model)(state, step))
    if count == 0:
        return 0, False
    closed_form = getattr(model.dynamics, "closed_form_boluses", False)
    return min(1 << (count - 1).bit_length(), state.doses.time.shape[-1]), bool(closed_form and not infusions)


def advance(model: Model, state: ParticleState, step: Steps, slots: int | None = None, boluses_only: bool = False,
            restarting: bool = False):
    """Record the step's dose and move every particle's amounts to the step's time.
    ``slots``: propagate through only that many dose slots, those that may deliver in the
    interval; None: through all K. ``boluses_only``: none of those is an infusion (both from
    :func:`dose_terms`). ``restarting`` (static; :func:`restarts`): some row's dose resets the
    body or is a steady-state dose (:func:`_advance_restarting`; all K slots)."""
    if restarting:
        return _advance_restarting(model, state, step)
    doses, lost, target, delivering = _delivering(model, state, step)
    table = doses if slots is None else compact(doses, delivering, slots)
    moved = propagate_particles(model, state.log_params, state.cache, state.amounts, state.time, target, table, boluses_only)
    active = step.reading_valid | step.dose_valid
    new = state._replace(
        amounts=jnp.where(active, moved, state.amounts),
        time=jnp.where(active, target, state.time),
        doses=doses._replace(fresh=jnp.where(active, False, doses.fresh)),
        lost_dose=state.lost_dose | lost,
    )
    return new


def restarts(step: Steps) -> bool:
    """Whether some row's dose in this step resets the body or is a steady-state dose: such a
    step takes a kernel of its own (``restarting``), so the others pay nothing for it."""
    return bool(np.any(np.asarray(step.dose_valid) & (np.asarray(step.reset) | (np.asarray(step.ss_interval) > 0))))


def _steady_particles(model: Model, state: ParticleState, amounts, step: Steps, active):
    """Every particle's amounts just before the step's steady-state dose (:mod:`.steady_state`)."""
    interval = jnp.where(active, step.ss_interval, 1.0)  # a finite train where the row has none (discarded)

    def one(lp, c, x):
        params = model.parameters(lp)
        c = c if _caches(model) else model.dynamics.prepare(params)
        F, lag = model.dose_attributes(params, x.dtype)
        return trough(model, params, c, x, step.dose_amount, step.dose_duration, step.dose_compartment, interval,
                      step.ss_additive, F, lag, active)

    return jax.vmap(one)(state.log_params, state.cache, amounts)


def _advance_restarting(model: Model, state: ParticleState, step: Steps) -> ParticleState:
    """:func:`advance` for a step whose dose may reset the body (``Reset``) or be a steady-state
    dose (``SteadyState``): the particles are moved to the dose's time under the doses recorded
    so far; a reset returns them to the start amounts and empties the dose table; a steady state
    sets the dosed states to the train's trough (SS=1 also empties the table) and records the
    train's doses that are still arriving; then the step's dose is recorded and the particles
    moved on to the step's time. Rows whose step does neither take the plain path."""
    plain = advance(model, state, step)
    _, high = lag_range(model, state.log_params)
    event_time = jnp.maximum(step.dose_time, state.time)
    steady = step.ss_interval > 0
    x = propagate_particles(model, state.log_params, state.cache, state.amounts, state.time, event_time, state.doses)
    x = jnp.where(step.reset, model.amounts_at_start(x.dtype), x)
    x = jnp.where(steady, _steady_particles(model, state, x, step, steady & step.dose_valid), x)
    forget = step.reset | (steady & ~step.ss_additive)
    table = state.doses._replace(amount=jnp.where(forget, 0.0, state.doses.amount), fresh=jnp.zeros_like(state.doses.fresh))
    lost = jnp.zeros((), bool)
    interval, compartment = jnp.where(steady, step.ss_interval, 1.0), step.dose_compartment
    for k in range(PERIODS - 1, 0, -1):  # the train's doses whose drug arrives at or after event_time, oldest first
        pending = steady & (k * interval <= high[compartment] + step.dose_duration)
        slot = table.cursor % table.time.shape[-1]
        lost = lost | (pending & still_delivering(table, high, event_time)[slot])
        table = record_dose(table, event_time - k * interval, step.dose_amount, step.dose_duration, compartment, pending)
    doses, lost_here = _record(table._replace(fresh=jnp.zeros_like(table.fresh)), high, step)
    target = step_target_time(event_time, step)
    moved = propagate_particles(model, state.log_params, state.cache, x, event_time, target, doses)
    new = state._replace(amounts=moved, time=target, doses=doses._replace(fresh=jnp.zeros_like(doses.fresh)),
                         lost_dose=state.lost_dose | lost | lost_here)
    marked = step.dose_valid & (step.reset | steady)
    return jax.tree.map(lambda a, b: jnp.where(marked, a, b), new, plain)


def _assimilate_one(model: Model, slots: int | None, may_be_censored: bool, state: ParticleState, step: Steps,
                    boluses_only: bool = False, restarting: bool = False):
    """One step for one patient (state without the patient axis). No random numbers."""
    state = advance(model, state, step, slots, boluses_only, restarting)
    log_lik = jax.vmap(
        lambda lp, x: reading_log_likelihood(model, model.parameters(lp), x, step.reading_analyte, step.reading_value,
                                             step.reading_censored, may_be_censored)
    )(state.log_params, state.amounts)
    weight, last_reading = reading_weight(model, state.last_reading, step)
    unnormalised = state.log_weights + weight * log_lik
    increment = logsumexp(unnormalised)  # log p(y | past), since weights were normalised
    valid = step.reading_valid
    new = state._replace(
        log_weights=jnp.where(valid, unnormalised - increment, state.log_weights),
        log_evidence=state.log_evidence + jnp.where(valid, increment, 0.0),
        last_reading=last_reading,
    )
    return new, effective_sample_size(new.log_weights)


@functools.lru_cache(maxsize=None)
def _assimilate_jit(model: Model, slots: int | None = None, donate: bool = False, may_be_censored: bool = True,
                    boluses_only: bool = False, restarting: bool = False):
    one = functools.partial(_assimilate_one, model, slots, may_be_censored, boluses_only=boluses_only, restarting=restarting)
    return jax.jit(jax.vmap(one), donate_argnums=(0,) if donate else ())


def assimilate(model: Model, state: ParticleState, step: Steps, donate: bool = False):
    """Reweight every patient by its step's reading; returns (state, ESS per patient).

    ``donate=True`` lets the kernel reuse ``state``'s buffers for the result (``state`` must
    not be used afterwards): :func:`update` does so for the states it made itself, so that a
    batch holds the caller's state and one working state, not a new copy per step."""
    # a kernel without the censored likelihood for the (usual) steps with no reading below LLOQ
    may_be_censored = bool(np.any(np.asarray(step.reading_censored) & np.asarray(step.reading_valid)))
    restarting = restarts(step)
    step = Steps(*map(jnp.asarray, step))
    slots, boluses_only = (None, False) if restarting else dose_terms(model, state, step)
    return _assimilate_jit(model, slots, donate, may_be_censored, boluses_only, restarting)(state, step)


def _resample_one(model: Model, options: Options, state: ParticleState) -> ParticleState:
    key, pick, jitter = jax.random.split(state.key, 3)
    ancestors = systematic_resample(state.log_weights, jax.random.uniform(pick, (), state.log_weights.dtype))
    free = jnp.asarray(model.random_mask(), state.log_params.dtype)
    log_params = liu_west_move(jitter, state.log_params, state.log_weights, ancestors, options.discount, free)
    n = state.log_weights.shape[0]
    return state._replace(
        log_params=log_params,
        amounts=state.amounts[ancestors],
        cache=_prepare(model, log_params),
        log_weights=jnp.full_like(state.log_weights, -np.log(n)),
        key=key,
        resamples=state.resamples + 1,
    )


def _renew_one(model: Model, state: ParticleState) -> ParticleState:
    """A new occasion: every particle's κ drawn afresh from N(0, σ²); η and weights kept."""
    key, draw = jax.random.split(state.key)
    log_params = with_fresh_kappa(model, state.log_params, draw)
    return state._replace(log_params=log_params, cache=_prepare(model, log_params), key=key)


def _shift_one(model: Model, state: ParticleState, time, delta) -> ParticleState:
    """Move to ``time`` under the old parameters, then log θ += ``delta`` for every particle."""
    target = jnp.maximum(time, state.time)
    moved = propagate_particles(model, state.log_params, state.cache, state.amounts, state.time, target, state.doses)
    log_params = state.log_params + delta.astype(state.log_params.dtype)
    return state._replace(
        log_params=log_params, amounts=moved, cache=_prepare(model, log_params), time=target,
        doses=state.doses._replace(fresh=jnp.zeros_like(state.doses.fresh)),
    )


@functools.lru_cache(maxsize=None)
def _shift_jit(model: Model):
    return _gathered(functools.partial(_shift_one, model))


def shift_parameters(model: Model, state: ParticleState, rows: np.ndarray, times: np.ndarray, deltas: np.ndarray) -> ParticleState:
    """Time-varying covariates: for each patient in ``rows``, propagate to ``times`` (h) and add
    ``deltas`` (R, p), the change of its covariate effects on log θ, to every particle."""
    if len(rows) == 0:
        return state
    n_rows, dtype = state.time.shape[0], state.log_params.dtype
    padded = _padded_rows(rows, n_rows)
    full_t = np.zeros(padded.shape[0])
    full_delta = np.zeros((padded.shape[0], deltas.shape[1]))
    full_t[: len(rows)], full_delta[: len(rows)] = times, deltas
    return _shift_jit(model)(state, padded, jnp.asarray(full_t, dtype), jnp.asarray(full_delta, dtype))


def _restart_one(model: Model, state: ParticleState, time, analyte, states, parameters, prior_mean) -> ParticleState:
    """Move to ``time``; then the ``states`` (mask, n) take their start values, the log
    ``parameters`` (mask, p) are drawn afresh from their prior N(``prior_mean``, Ω) for every particle,
    and the new sensor's first reading of ``analyte`` counts in full (its errors are not the
    old sensor's: ``Analyte.persistence_h``)."""
    target = jnp.maximum(time, state.time)
    moved = propagate_particles(model, state.log_params, state.cache, state.amounts, state.time, target, state.doses)
    key, draw = jax.random.split(state.key)
    # a whole prior draw, of which the sensor's entries are kept: their marginal, correlations
    # among them included (Model checks that Ω couples them to nothing else)
    root = jnp.asarray(model.prior_sqrt(), state.log_params.dtype)
    fresh = prior_mean + jax.random.normal(draw, state.log_params.shape, state.log_params.dtype) @ root.T
    log_params = jnp.where(parameters, fresh, state.log_params)
    amounts = jnp.where(states, model.amounts_at_start(moved.dtype), moved)
    return state._replace(
        log_params=log_params, amounts=amounts, cache=_prepare(model, log_params), time=target, key=key,
        doses=state.doses._replace(fresh=jnp.zeros_like(state.doses.fresh)),
        last_reading=state.last_reading.at[analyte].set(-jnp.inf),
    )


@functools.lru_cache(maxsize=None)
def _restart_jit(model: Model):
    return _gathered(functools.partial(_restart_one, model))


def restart_sensors(model: Model, state: ParticleState, rows: np.ndarray, times: np.ndarray, analytes: list,
                    prior_means: np.ndarray) -> ParticleState:
    """Sensor changes: for each patient in ``rows``, propagate to ``times`` (h) and restart what
    the sensor of its ``analytes`` entry names (:meth:`Model.sensor_restart`); ``prior_means``
    (R, p) are the patients' prior means of the log-parameter vector."""
    if len(rows) == 0:
        return state
    n_rows, dtype = state.time.shape[0], state.log_params.dtype
    padded = _padded_rows(rows, n_rows)
    R, n, p = padded.shape[0], model.n_compartments, model.n_parameters
    full_t, full_mean, index = np.zeros(R), np.zeros((R, p)), np.zeros(R, np.int32)
    states, parameters = np.zeros((R, n), bool), np.zeros((R, p), bool)
    full_t[: len(rows)], full_mean[: len(rows)] = times, prior_means
    for r, analyte in enumerate(analytes):
        index[r] = model.analyte_index(analyte)
        states[r], parameters[r] = model.sensor_restart(analyte)
    return _restart_jit(model)(state, padded, jnp.asarray(full_t, dtype), jnp.asarray(index), jnp.asarray(states),
                               jnp.asarray(parameters), jnp.asarray(full_mean, dtype))


def _gathered(one, donate: bool = False):
    """Apply a one-patient map ``one(state, *inputs)`` to the rows given, with per-row
    ``inputs`` aligned to ``rows`` (rows == P are padding: gathered with clipping, dropped on
    scatter), leaving the other rows untouched. ``donate``: the scatter writes into the
    state's own buffers (the caller gives the state up) instead of a copy of all rows."""
    many = jax.vmap(one)

    def gathered(state: ParticleState, rows: Int[Array, " R"], *inputs) -> ParticleState:
        if rows.shape[0] == state.time.shape[0] and not inputs:
            # padded to the whole batch (e.g. every patient's first reading): map every row and
            # keep the unselected ones, with no gather and scatter pass (~10 % of a resampling)
            selected = jnp.zeros(rows.shape[0], bool).at[rows].set(True, mode="drop")
            keep = lambda new, old: jnp.where(selected.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)  # noqa: E731
            return jax.tree.map(keep, many(state), state)
        subset = jax.tree.map(lambda a: jnp.take(a, rows, axis=0, mode="clip"), state)
        return jax.tree.map(lambda a, b: a.at[rows].set(b, mode="drop"), state, many(subset, *inputs))

    return jax.jit(gathered, donate_argnums=(0,) if donate else ())


@functools.lru_cache(maxsize=None)
def _resample_jit(model: Model, options: Options, donate: bool = False):
    return _gathered(functools.partial(_resample_one, model, options), donate)


@functools.lru_cache(maxsize=None)
def _renew_jit(model: Model, donate: bool = False):
    return _gathered(functools.partial(_renew_one, model), donate)


def _padded_rows(rows: np.ndarray, n_rows: int):
    # 8, 16, 32, ... rows or all of them: few distinct shapes per batch size, so few
    # compilations (each costs seconds; a live service meets every combination sooner or later),
    # and at most half of a call is padding (powers of four wasted up to 3/4 of the resampling)
    padded = np.full(min(bucket(len(rows), 8, factor=2), n_rows), n_rows, np.int32)
    padded[: len(rows)] = rows
    return jnp.asarray(padded)


def resample(model: Model, options: Options, state: ParticleState, rows: np.ndarray, donate: bool = False) -> ParticleState:
    """Resample + Liu–West move the patients in ``rows`` only (padded to a power of two).
    ``donate``: as in :func:`assimilate`."""
    if len(rows) == 0:
        return state
    return _resample_jit(model, options, donate)(state, _padded_rows(rows, state.time.shape[0]))


def renew_occasions(model: Model, state: ParticleState, rows: np.ndarray, donate: bool = False) -> ParticleState:
    """Start a new occasion (fresh κ) for the patients in ``rows``; the state must be at the
    occasion's first dose (its left limit), so that the drug given from then on sees the new κ."""
    if len(rows) == 0:
        return state
    return _renew_jit(model, donate)(state, _padded_rows(rows, state.time.shape[0]))


def step_occasion_starts(model: Model, state: ParticleState, steps: Steps) -> np.ndarray | None:
    """(P, S) which packed dose steps open an occasion; None for a model without IOV."""
    if model.occasions is None:
        return None
    previous = last_dose_times(np.asarray(state.doses.time), np.asarray(state.doses.amount))
    return occasion_starts(model.occasions, previous, np.asarray(steps.dose_valid), np.asarray(steps.dose_time), np.asarray(steps.dose_amount))


def update(model: Model, options: Options, state: ParticleState, steps: Steps, donate: bool = False) -> ParticleState:
    """Assimilate packed steps (P, S) step by step, resampling where ESS < threshold · N and
    drawing new κ where a dose opens an occasion (IOV models pack such doses as steps of their own).

    ``donate=True``: the caller gives ``state`` up (it must not be used afterwards), so its
    buffers hold the result and a batch never holds two states (at 10,000 patients × 1,000
    particles a state is ~0.3 GB). By default the caller's state is left intact."""
    limit = options.threshold * options.n_particles
    starts = step_occasion_starts(model, state, steps)
    owned = donate  # the caller's state only when given up; the states made here always
    for s in range(steps.dose_valid.shape[1]):
        step = steps.step(s)
        if not (step.dose_valid.any() or step.reading_valid.any()):
            continue
        state, ess = assimilate(model, state, step, donate=owned)
        owned = True
        rows = np.flatnonzero((np.asarray(ess) < limit) & step.reading_valid)
        state = resample(model, options, state, rows, donate=True)
        if starts is not None:
            state = renew_occasions(model, state, np.flatnonzero(starts[:, s]), donate=True)
    return state


# ----------------------------------------------------------------------------- prediction


def _forecast_one(model: Model, state: ParticleState, times, renew, regimen: DoseTable, analyte: int, noise: bool, levels):
    doses = concatenate_tables(state.doses, regimen)
    renew_key = jax.random.fold_in(state.key, 3)

    def advance(carry, inputs):
        x, t0, table, log_params, cache = carry
        t1, renew_here, k = inputs
        x = propagate_particles(model, log_params, cache, x, t0, t1, table)
        f = jax.vmap(lambda lp, xi: predict_readings(model, model.parameters(lp), xi)[analyte])(log_params, x)
        if model.occasions is not None:  # an occasion opens at t1: κ drawn afresh after the left limit
            renewed = with_fresh_kappa(model, log_params, jax.random.fold_in(renew_key, k))
            log_params = jnp.where(renew_here, renewed, log_params)
            cache = jax.tree.map(lambda a, b: jnp.where(renew_here, a, b), _prepare(model, renewed), cache)
        return (x, t1, table._replace(fresh=jnp.zeros_like(table.fresh)), log_params, cache), f

    inputs = (times, renew, jnp.arange(times.shape[0]))
    _, f = jax.lax.scan(advance, (state.amounts, state.time, doses, state.log_params, state.cache), inputs)  # (T, N)
    if noise:  # predictive distribution of a reading, not of the true concentration
        draws = jax.random.normal(jax.random.fold_in(state.key, 1), f.shape, f.dtype)
        f = model.analytes[analyte].error.sample(draws, f)
    w = jnp.exp(state.log_weights)
    mean = f @ w
    quantiles = jax.vmap(lambda row: weighted_quantiles(row, state.log_weights, levels))(f).T  # (Q, T)
    ancestors = systematic_resample(state.log_weights, jax.random.uniform(jax.random.fold_in(state.key, 2), (), f.dtype))
    return mean, quantiles, f[:, ancestors].T


@functools.lru_cache(maxsize=None)
def _forecast_jit(model: Model, analyte: int, noise: bool):
    one = lambda s, t, n, r, l: _forecast_one(model, s, t, n, r, analyte, noise, l)  # noqa: E731
    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)))


def forecast(model: Model, state: ParticleState, times, regimen: DoseTable, analyte: int, noise: bool, levels, options=None,
             renew=None) -> Forecast:
    """Weighted predictive mean/quantiles and N equally weighted samples at ``times`` (P, T).

    ``renew`` (P, T) bool: an occasion opens at that time (IOV models; κ redrawn after the
    value there is taken). Default: none."""
    levels = jnp.asarray(levels, state.log_weights.dtype)
    renew = jnp.zeros(times.shape, bool) if renew is None else jnp.asarray(renew)
    mean, quantiles, samples = _forecast_jit(model, analyte, noise)(state, times, renew, regimen, levels)
    return Forecast(times, mean, levels, quantiles, samples)
