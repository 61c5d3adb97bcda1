"""Dose events and the per-patient table of doses that may still be delivering drug.

A dose of ``amount`` mg given at ``time`` h into ``compartment`` reaches it at
``time + lag[compartment]`` with ``F[compartment] · amount`` mg (lag time and bioavailability
are per-compartment model parameters, so they may be uncertain and differ between particles):

* ``duration == 0``: bolus, an instantaneous jump of the compartment amount;
* ``duration > 0``: zero-order infusion at rate F·amount/duration mg/h for ``duration`` h;
* first-order absorption = a bolus into a depot compartment that empties with rate ka.

States are left-continuous: the state at time t does not yet contain a bolus arriving at t,
so a reading and a dose at the same time see the pre-dose (trough) state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = ["Dose", "DoseTable", "empty_dose_table", "record_dose", "may_deliver", "compact"]


class Dose(NamedTuple):
    """One administration. ``compartment`` is an index or a compartment name of the model."""

    time: float
    amount: float
    compartment: int | str = 0
    duration: float = 0.0


class DoseTable(NamedTuple):
    """Ring buffer of the last K doses of one patient (leading batch axes allowed).

    ``fresh`` marks doses recorded since the state was last propagated: they contribute from
    their own start time rather than from the state's time (so a late-arriving dose record
    is still counted in full for everything after it).
    """

    time: Float[Array, "... K"]
    amount: Float[Array, "... K"]
    duration: Float[Array, "... K"]
    compartment: Int[Array, "... K"]
    fresh: Bool[Array, "... K"]
    cursor: Int[Array, "..."]


def empty_dose_table(slots: int, dtype=jnp.float32) -> DoseTable:
    zeros = jnp.zeros(slots, dtype)
    return DoseTable(zeros, zeros, zeros, jnp.zeros(slots, jnp.int32), jnp.zeros(slots, bool), jnp.int32(0))


def record_dose(table: DoseTable, time, amount, duration, compartment, valid) -> DoseTable:
    """Write a dose into the next slot (overwriting the oldest) when ``valid``."""
    slot = table.cursor % table.time.shape[-1]

    def put(array, value):
        return array.at[slot].set(jnp.where(valid, value, array[slot]))

    return DoseTable(
        time=put(table.time, time),
        amount=put(table.amount, amount),
        duration=put(table.duration, duration),
        compartment=put(table.compartment, compartment),
        fresh=put(table.fresh, True),
        cursor=table.cursor + valid.astype(jnp.int32),
    )


def still_delivering(table: DoseTable, lag: Float[Array, " n"], now) -> Bool[Array, " K"]:
    """True for slots whose drug has not fully arrived by ``now`` (overwriting them loses drug)."""
    end = table.time + lag[table.compartment] + table.duration
    return (table.amount > 0) & (end >= now)


def may_deliver(table: DoseTable, lag_low: Float[Array, " n"], lag_high: Float[Array, " n"], t0, t1) -> Bool[Array, " K"]:
    """Slots that may put drug into the body during [t0, t1) for some lag in [lag_low, lag_high]
    (per compartment): the dose has arrived before t1, and it is fresh (counted from its own
    start) or still delivering at t0. Conservative: a slot outside this set contributes nothing
    to the state at t1 under any particle's lag, so propagation may skip it."""
    earliest = table.time + lag_low[table.compartment]
    end = table.time + lag_high[table.compartment] + table.duration
    return (table.amount > 0) & (earliest < t1) & (table.fresh | (end >= t0))


def compact(table: DoseTable, mask: Bool[Array, " K"], slots: int) -> DoseTable:
    """A table of ``slots`` slots holding the slots where ``mask`` holds (in their order), the rest
    emptied (amount 0 delivers nothing). ``slots`` must be at least ``mask.sum()``; propagating the
    compacted table costs ``slots`` dose terms per particle instead of K."""
    order = jnp.argsort(~mask, stable=True)[:slots]
    kept = mask[order]
    return DoseTable(
        time=table.time[order],
        amount=jnp.where(kept, table.amount[order], 0.0),
        duration=table.duration[order],
        compartment=table.compartment[order],
        fresh=table.fresh[order] & kept,
        cursor=table.cursor,
    )


def concatenate_tables(first: DoseTable, second: DoseTable) -> DoseTable:
    """Slots of both tables (one patient); used to add a candidate regimen to the history."""
    fields = [jnp.concatenate([a, b]) for a, b in zip(first[:-1], second[:-1])]
    return DoseTable(*fields, cursor=first.cursor)
