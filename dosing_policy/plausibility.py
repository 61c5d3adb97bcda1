"""Is a reading plausible under the posterior predictive? (sensor-fault and misfit checks)

For a reading y of an analyte at time t, with particles propagated to t (doses included):

    F(y) = P(Y ≤ y) = Σ_i w_i · P_ε(Y ≤ y | f(θ_i, x_i(t)))      (the predictive PIT)

and the two-sided tail probability 2·min(F, 1 − F). Under a calibrated model F is uniform
on (0, 1), so a threshold α flags a fraction α of good readings; a reading with tail
probability 1e-4 is an implausible reading or a sensor fault. The sign of F − ½ is the
direction of the prediction error (a run of one sign = model misfit, see :mod:`.alerts`).

A live service checks every new reading, and :func:`check_reading` is two small jitted calls,
each a dispatch and a host synchronisation. :func:`check_patients` checks the readings of
many patients in one call: each reading of patient p against p's sample carried forward from
the sample's time to the reading's (every reading against the same sample, not one after the
other), vmapped over readings, in calls of a few fixed sizes (rows and dose slots padded to
buckets, :func:`assimilation.events.bucket`) so that a running service compiles few shapes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from assimilation import Dose, Model
from assimilation.dosing import DoseTable
from assimilation.events import Reading, bucket

from .forecast import history_table, particle_cache
from .sample import PosteriorSample, normalised_weights

__all__ = ["ReadingCheck", "advance", "check_patients", "check_reading", "check_readings", "predictive_cdf"]


class ReadingCheck(NamedTuple):
    pit: float  # F(y)
    tail_probability: float  # 2 min(F, 1 − F)
    predicted_median: float  # weighted median of the predicted analyte (no residual error)

    @property
    def sign(self) -> int:
        """+1 reading above the prediction, −1 below, 0 exactly central."""
        return int(self.pit > 0.5) - int(self.pit < 0.5)


def _advance(model: Model, sample: PosteriorSample, history: DoseTable, t) -> PosteriorSample:
    cache = particle_cache(model, sample)

    def one(lp, c, x):
        params = model.parameters(lp)
        F, lag = model.dose_attributes(params, x.dtype)
        return model.dynamics.propagate(params, c, x, sample.time, t, history, F, lag)

    amounts = jax.vmap(one)(sample.log_params, cache, sample.amounts)
    return sample._replace(amounts=amounts, time=jnp.asarray(t, sample.amounts.dtype))


_advance_jit = jax.jit(_advance, static_argnums=0)


def advance(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, t: float) -> PosteriorSample:
    """The sample's amounts carried forward to time ``t`` ≥ ``sample.time`` (weights unchanged)."""
    dtype = sample.amounts.dtype
    return _advance_jit(model, sample, history_table(model, history, dtype), jnp.asarray(t, dtype))


def _order_key(f: Float[Array, " N"]) -> Array:
    """uint32 keys in the order of the float32 values (the radix-sort map: flip every bit of
    a negative number, only the sign bit of a positive one)."""
    bits = jax.lax.bitcast_convert_type(f.astype(jnp.float32), jnp.uint32)
    return bits ^ jnp.where(bits >> 31 == 1, jnp.uint32(0xFFFFFFFF), jnp.uint32(0x80000000))


def _weighted_median(f: Float[Array, " N"], w: Float[Array, " N"]) -> Float[Array, ""]:
    """The smallest f_i with Σ_{j: f_j ≤ f_i} w_j ≥ ½ (w normalised).

    Found by bisection on the order-preserving integer image of the values, 32 masked sums
    of N weights, instead of sorting the particles: on CPU the sort was two thirds of a
    reading check's arithmetic. The search ends on the key of a value in ``f``, so the
    result is one of the particles' predictions, as with a sort. Where the cumulative weight
    reaches ½ exactly at a particle (equal weights, even N), rounding decides between the two
    middle values, as it does with a sort and a cumulative sum.
    """
    key = _order_key(f)

    def halve(_, bounds):
        lo, hi = bounds  # the answer's key is in [lo, hi]
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(jnp.where(key <= mid, w, 0.0)) >= 0.5
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 32, halve, (jnp.min(key), jnp.max(key)))
    return jnp.min(jnp.where(key >= lo, f, jnp.inf))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _cdf_and_median(model: Model, analyte: int, sample: PosteriorSample, value):
    error = model.analytes[analyte].error
    f = jax.vmap(lambda lp, x: model.analytes[analyte].predict(model.parameters(lp), x))(sample.log_params, sample.amounts)
    w = normalised_weights(sample.log_weights)
    cdf = jnp.sum(w * jnp.exp(error.log_cdf(value, f)))
    return cdf, _weighted_median(f, w)


def predictive_cdf(model: Model, sample: PosteriorSample, analyte: int | str, value: float) -> float:
    """F(y) with the sample's amounts at the reading time."""
    return float(_cdf_and_median(model, model.analyte_index(analyte), sample, jnp.asarray(value, sample.amounts.dtype))[0])


def check_reading(model: Model, sample: PosteriorSample, history: Sequence[Dose] | DoseTable, time: float,
                  analyte: int | str, value: float) -> ReadingCheck:
    """PIT and tail probability of a reading at ``time`` (before it is assimilated)."""
    at = advance(model, sample, history, time) if time != float(sample.time) else sample
    cdf, median = _cdf_and_median(model, model.analyte_index(analyte), at, jnp.asarray(value, at.amounts.dtype))
    cdf = float(cdf)
    return ReadingCheck(cdf, 2.0 * min(cdf, 1.0 - cdf), float(median))


# ----------------------------------------------------------------------------- batched checks


# Rows (readings) per call; more take several calls. Larger calls are no cheaper per reading on
# CPU (measured per reading: 16 rows 0.28 ms, 64 rows 0.30, 256 rows 0.37), and every larger
# bucket would be one more shape to compile: 1.5 s, many more when it first comes in a backlog,
# with the ingest threads holding the GIL. So rows come in 1, 4 or 16 and all three are
# compiled within the first seconds of a running service.
MAX_ROWS = 16


def _check_one(model: Model, analyte: int, sample: PosteriorSample, history: DoseTable, t: Float[Array, ""],
               y: Float[Array, ""]) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """F(y) and the weighted median prediction of one reading of ``analyte`` at ``t``, against
    ``sample`` carried forward from ``sample.time`` to t with ``history`` (as :func:`check_reading`)."""
    cache = particle_cache(model, sample)

    def prediction(lp, c, x):
        params = model.parameters(lp)
        F, lag = model.dose_attributes(params, x.dtype)
        moved = model.dynamics.propagate(params, c, x, sample.time, t, history, F, lag)
        # check_reading does not propagate a reading at the sample's own time (not even by 0 h)
        moved = jnp.where(t == sample.time, x, moved)
        return model.analytes[analyte].predict(params, moved)

    f = jax.vmap(prediction)(sample.log_params, cache, sample.amounts)
    w = normalised_weights(sample.log_weights)
    return jnp.sum(w * jnp.exp(model.analytes[analyte].error.log_cdf(y, f))), _weighted_median(f, w)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _check_batch(model: Model, analyte: int, samples: PosteriorSample, histories: DoseTable, times: Float[Array, " Q"],
                 values: Float[Array, " Q"]) -> tuple[Float[Array, " Q"], Float[Array, " Q"]]:
    """:func:`_check_one` vmapped over readings: row q holds its patient's sample and doses.

    The analyte is static: traced, it would have every reading evaluate every analyte's
    prediction and residual error (40 % more arithmetic with two analytes).
    """
    return jax.vmap(functools.partial(_check_one, model, analyte))(samples, histories, times, values)


def _history_rows(model: Model, histories: Sequence[Sequence[Dose]], slots: int, dtype) -> DoseTable:
    """(Q, slots) dose tables, not fresh (see :func:`.forecast.history_table`); unused slots hold
    zero amounts, which add exactly nothing."""
    rows = len(histories)
    time, amount, duration = (np.zeros((rows, slots), dtype) for _ in range(3))
    compartment = np.zeros((rows, slots), np.int32)
    for q, doses in enumerate(histories):
        for k, dose in enumerate(doses):
            time[q, k], amount[q, k], duration[q, k] = dose.time, dose.amount, dose.duration
            compartment[q, k] = model.compartment_index(dose.compartment)
    count = np.asarray([len(doses) for doses in histories], np.int32)
    return DoseTable(time, amount, duration, compartment, np.zeros((rows, slots), bool), count)


def _sample_rows(samples: Sequence[PosteriorSample]) -> PosteriorSample:
    """One sample with a leading row axis, stacked on the host. The samples' caches are kept
    only when every sample has one."""
    stacked = [np.stack([np.asarray(getattr(s, name)) for s in samples]) for name in ("log_params", "amounts", "log_weights", "time")]
    cache = None
    if all(s.cache is not None for s in samples):
        cache = jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *(s.cache for s in samples))
    return PosteriorSample(*stacked, cache=cache)


def check_patients(model: Model, samples: Sequence[PosteriorSample], histories: Sequence[Sequence[Dose]],
                   readings: Sequence[Sequence[Reading]]) -> list[list[ReadingCheck]]:
    """:func:`check_reading` of every reading of every patient, in a few vmapped calls.

    Patient p's readings are each checked against ``samples[p]`` carried forward to the
    reading's time with ``histories[p]`` (the doses given after the sample's time, or still
    being delivered at it); ``readings[p]`` in any order. The samples must have the same
    number of particles. One row per reading (its patient's sample and doses copied into it on
    the host), at most :data:`MAX_ROWS` rows a call, rows padded to powers of four and dose
    slots to powers of two, so that a running service compiles few shapes.
    """
    if not (len(samples) == len(histories) == len(readings)):
        raise ValueError("one sample, one dose history and one list of readings per patient")
    results: list[list[ReadingCheck | None]] = [[None] * len(own) for own in readings]
    by_analyte: dict[int, list[tuple[int, int]]] = {}  # analyte -> (patient, reading) of its rows
    for p, own in enumerate(readings):
        for r, reading in enumerate(own):
            by_analyte.setdefault(model.analyte_index(reading.analyte), []).append((p, r))
    calls = []
    for analyte, everything in sorted(by_analyte.items()):
        for rows in (everything[i : i + MAX_ROWS] for i in range(0, len(everything), MAX_ROWS)):
            # padding rows repeat the first: computed, then dropped
            padded = rows + [rows[0]] * (bucket(len(rows), factor=4) - len(rows))
            dtype = np.asarray(samples[rows[0][0]].amounts).dtype
            slots = bucket(max(len(histories[p]) for p, _ in rows))
            # Dispatched without waiting: the next call's rows are packed while this one runs.
            calls.append((rows, _check_batch(
                model, analyte, _sample_rows([samples[p] for p, _ in padded]),
                _history_rows(model, [histories[p] for p, _ in padded], slots, dtype),
                np.asarray([readings[p][r].time for p, r in padded], dtype),
                np.asarray([readings[p][r].value for p, r in padded], dtype),
            )))
    for rows, (cdf, median) in calls:
        cdf, median = np.asarray(cdf, np.float64), np.asarray(median, np.float64)  # one host transfer per call
        for q, (p, r) in enumerate(rows):
            pit = float(cdf[q])
            results[p][r] = ReadingCheck(pit, 2.0 * min(pit, 1.0 - pit), float(median[q]))
    return results


def check_readings(model: Model, sample: PosteriorSample, history: Sequence[Dose], times: Sequence[float],
                   analytes: Sequence[int | str], values: Sequence[float]) -> list[ReadingCheck]:
    """:func:`check_reading` of several readings of one patient, batched (see
    :func:`check_patients`): each reading against ``sample`` carried forward to its own time."""
    readings = [Reading(float(t), float(y), a) for t, a, y in zip(times, analytes, values, strict=True)]
    return check_patients(model, [sample], [list(history)], [readings])[0]
