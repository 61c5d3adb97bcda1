"""Deterministic simulation of one parameter vector: the forward model every method shares."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .dosing import Dose, DoseTable
from .model import Model

__all__ = ["Course", "amounts_after", "amounts_at", "dose_table_of", "predict_readings"]


def dose_table_of(model: Model, doses: Sequence[Dose], slots: int | None = None, dtype=jnp.float32) -> DoseTable:
    """All ``doses`` as fresh slots (zero-padded to ``slots``)."""
    k = max(len(doses), 1) if slots is None else slots
    if len(doses) > k:
        raise ValueError(f"{len(doses)} doses do not fit in {k} slots")
    table = np.zeros((4, k))
    compartment = np.zeros(k, np.int32)
    for i, dose in enumerate(doses):
        table[:, i] = (dose.time, dose.amount, dose.duration, 0)
        compartment[i] = model.compartment_index(dose.compartment)
    return DoseTable(
        jnp.asarray(table[0], dtype), jnp.asarray(table[1], dtype), jnp.asarray(table[2], dtype),
        jnp.asarray(compartment), jnp.ones(k, bool), jnp.int32(len(doses)),
    )


def amounts_at(model: Model, log_params: Float[Array, " p"], doses: DoseTable, times: Float[Array, " T"]) -> Float[Array, "T n"]:
    """Compartment amounts at increasing ``times`` (left limits) from the model's start state (no drug on board) before any dose."""
    start = jnp.minimum(times[0], jnp.min(jnp.where(doses.amount > 0, doses.time, times[0])))
    x0 = model.amounts_at_start(times.dtype)
    return amounts_after(model, log_params, Course(x0, start, doses), times)[1]


class Course(NamedTuple):
    """Where a simulated course stands: amounts at a time, and the doses still to act on it
    (their fresh flags spent once the first step has taken them in)."""

    amounts: Float[Array, " n"]
    time: Float[Array, ""]
    doses: DoseTable


def amounts_after(
    model: Model, log_params: Float[Array, " p"], course: Course, times: Float[Array, " T"]
) -> tuple[Course, Float[Array, "T n"]]:
    """Amounts at increasing ``times`` from ``course``, and the course at the last time: a long
    time grid can be computed in fixed-size pieces with the same result."""
    params = model.parameters(log_params)
    cache = model.dynamics.prepare(params)
    F, lag = model.dose_attributes(params, times.dtype)

    def advance(course, t1):
        x = model.dynamics.propagate(params, cache, course.amounts, course.time, t1, course.doses, F, lag)
        return Course(x, t1, course.doses._replace(fresh=jnp.zeros_like(course.doses.fresh))), x

    return jax.lax.scan(advance, course, times)


def predict_readings(model: Model, params: dict, amounts: Float[Array, " n"]) -> Float[Array, " A"]:
    """Expected reading of every analyte, shape (A,)."""
    return jnp.stack([analyte.predict(params, amounts) for analyte in model.analytes])
