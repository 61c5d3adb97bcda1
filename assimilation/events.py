"""Readings, and packing per-patient event lists into padded arrays for the vmapped filters.

A patient's events (doses and readings, any order) become a sequence of *steps*; a step is
an optional dose followed by an optional reading. Doses between two readings get one step
each; a reading at the same time as a dose is taken first (a trough is drawn before the dose).
Arrays are shaped (patients, steps); padding steps have both ``*_valid`` flags False.

A :class:`Reset` (NONMEM's EVID 3) and a :class:`SteadyState` dose (SS 1 / 2) are packed as
dose steps that carry a flag (``reset``, ``ss_interval`` > 0): a reset is a dose of amount 0
whose step first returns the body to its start state; a steady-state dose's step first sets
the amounts to the steady-state trough of its dose train (:mod:`.steady_state`), then gives
the dose. Both act at their own time, before a reading at that time.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from jaxtyping import Bool, Float, Int

from .dosing import Dose
from .steady_state import check_steady_state

__all__ = ["Reading", "CovariateChange", "SensorChange", "Reset", "SteadyState", "Steps", "pack_events", "empty_steps", "bucket",
           "sort_events", "split_at"]


class Reading(NamedTuple):
    """One measurement. ``censored=True`` means "below ``value``" (value = the LLOQ)."""

    time: float
    value: float
    analyte: int | str = 0
    censored: bool = False


class CovariateChange(NamedTuple):
    """From ``time`` (h) on, the patient's covariates named in ``values`` take these values
    (a new weight, a new creatinine clearance). The filters shift every particle's log θ by
    the change of the covariate effects; what was learned about η carries over."""

    time: float
    values: dict


class SensorChange(NamedTuple):
    """From ``time`` (h) on, ``analyte`` is read by a new sensor (the old one removed, a new one
    inserted). What the model's :class:`~assimilation.model.Sensor` of that analyte names
    restarts: its states at their start values, its parameters drawn afresh from the prior
    (a new sensor's calibration and drift are not the old one's); what was learned about the
    patient carries over. Applied before a reading at the same time."""

    time: float
    analyte: int | str = 0


class Reset(NamedTuple):
    """At ``time`` (h) the body returns to the model's start state (``Model.initial_amounts``,
    every compartment) and the doses given before deliver nothing more (infusions in progress
    stop, lagged doses never arrive): NONMEM's EVID 3 (EVID 4 is a reset and a dose at the same
    time). What was learned about the patient's parameters carries over. Applied before a
    reading at the same time."""

    time: float


class SteadyState(NamedTuple):
    """A dose of ``amount`` mg at ``time`` h that is the last of an endless train, one every
    ``interval`` h (NONMEM's SS with II): just before it (the left limit at ``time``, which a
    reading at that time sees) the dosed states hold the steady-state trough of the train, and
    then the dose itself is given like a :class:`~assimilation.dosing.Dose`. ``additive=False``
    (SS=1) replaces what the body held and forgets the doses given before; ``additive=True``
    (SS=2) adds the train to it (superposition: linear models only). States the dose cannot
    reach (a sensor's gain) keep their values. The maths is in :mod:`.steady_state`."""

    time: float
    amount: float
    interval: float
    compartment: int | str = 0
    duration: float = 0.0
    additive: bool = False

    @property
    def dose(self) -> Dose:
        return Dose(self.time, self.amount, self.compartment, self.duration)


class Steps(NamedTuple):
    dose_valid: Bool[np.ndarray, "P S"]
    dose_time: Float[np.ndarray, "P S"]
    dose_amount: Float[np.ndarray, "P S"]
    dose_duration: Float[np.ndarray, "P S"]
    dose_compartment: Int[np.ndarray, "P S"]
    reading_valid: Bool[np.ndarray, "P S"]
    reading_time: Float[np.ndarray, "P S"]
    reading_value: Float[np.ndarray, "P S"]
    reading_analyte: Int[np.ndarray, "P S"]
    reading_censored: Bool[np.ndarray, "P S"]
    reset: Bool[np.ndarray, "P S"]  # the step's dose first resets the body (Reset)
    ss_interval: Float[np.ndarray, "P S"]  # > 0: the step's dose is a SteadyState dose with this interval, h
    ss_additive: Bool[np.ndarray, "P S"]  # its steady state adds to the amounts (SS=2) instead of replacing them

    def step(self, s: int) -> "Steps":
        return Steps(*(a[:, s] for a in self))


def bucket(n: int, minimum: int = 1, coarse: int = 1024, factor: int = 2) -> int:
    """Padded size for n rows: the next power of ``factor`` ≥ n (times ``minimum``) up to
    ``coarse``, above it the next multiple of ``coarse`` (10,000 patients -> 10,240 rows, not
    16,384). Padding sizes to buckets bounds the number of compilations; a larger factor
    trades padding for fewer of them."""
    size = max(minimum, 1)
    while size < n and size < coarse:
        size *= factor
    if size < n:
        size = -(-n // coarse) * coarse
    return size


_ORDER = {Reset: 0, SensorChange: 1, SteadyState: 2, Reading: 3, CovariateChange: 4, Dose: 5}
_DOSING = (Dose, SteadyState, Reset)  # what packs into a step's dose fields


def sort_events(events: Sequence) -> list:
    """Time order; at equal times resets, sensor changes, steady-state doses, readings,
    covariate changes, then doses (stable otherwise): a trough drawn at a dose's time sees
    neither the dose nor the new covariates, a reading at a reset sees the body restarted, one
    at a steady-state dose the train's trough, and a new sensor's first reading is read by the
    new sensor."""
    for event in events:
        if type(event) not in _ORDER:
            raise TypeError(f"expected Dose, Reading, CovariateChange, SensorChange, Reset or SteadyState, "
                            f"got {type(event).__name__}: {event!r}")
    return sorted(events, key=lambda e: (float(e.time), _ORDER[type(e)]))


def split_at(events: Sequence, kind: type | tuple[type, ...]) -> list[tuple[list, object | None]]:
    """The events in time order, cut after each event of type ``kind`` (or of the types):
    [(events before marker 1, marker 1), ..., (events after the last marker, None)]."""
    cuts, current = [], []
    for event in sort_events(events):
        if isinstance(event, kind):
            cuts.append((current, event))
            current = []
        else:
            current.append(event)
    return cuts + [(current, None)]


def _steps_of(events, pair: bool = True) -> list[tuple]:
    """(dose, reading) pairs; ``pair=False`` gives every dose a step of its own (IOV models:
    a new occasion's κ is drawn between the dose step and the reading)."""
    steps, pending = [], []
    for event in sort_events(events):
        if isinstance(event, _DOSING):
            pending.append(event)
        elif not isinstance(event, Reading):
            raise TypeError(f"{type(event).__name__} is applied by the online API between packed steps, not packed")
        else:
            paired = pending[-1] if pending and pair else None
            steps.extend((dose, None) for dose in (pending[:-1] if paired is not None else pending))
            steps.append((paired, event))
            pending = []
    steps.extend((dose, None) for dose in pending)
    return steps


def pack_events(model, events_per_patient: Sequence[Sequence], n_rows: int, dtype=np.float32, min_steps: int = 1) -> Steps:
    """Pack events into (n_rows, S) arrays; rows past len(events_per_patient) are padding."""
    pair = getattr(model, "occasions", None) is None
    per_patient = [_steps_of(events, pair) for events in events_per_patient]
    n_steps = bucket(max([len(s) for s in per_patient] + [1]), min_steps)
    out = empty_steps(n_rows, n_steps, dtype)
    for i, steps in enumerate(per_patient):
        for s, (dose, reading) in enumerate(steps):
            if dose is not None:
                _pack_dose(model, out, i, s, dose)
            if reading is not None:
                analyte = model.analyte_index(reading.analyte)
                out.reading_valid[i, s] = True
                out.reading_time[i, s] = reading.time
                out.reading_value[i, s] = reading.value
                out.reading_analyte[i, s] = analyte
                out.reading_censored[i, s] = bool(reading.censored)
    return out


def empty_steps(n_rows: int, n_steps: int, dtype=np.float32) -> Steps:
    """(n_rows, n_steps) steps that do nothing (padding)."""
    shape = (n_rows, n_steps)
    kinds = {"dose_compartment": np.int32, "reading_analyte": np.int32}
    flags = ("dose_valid", "reading_valid", "reading_censored", "reset", "ss_additive")
    return Steps(*(np.zeros(shape, bool if name in flags else kinds.get(name, dtype)) for name in Steps._fields))


def _pack_dose(model, out: Steps, i: int, s: int, dose: Dose | SteadyState | Reset) -> None:
    """Write one dose-like event into step (i, s): a reset as a dose of amount 0 that resets."""
    if isinstance(dose, Reset):
        dose, out.reset[i, s] = Dose(dose.time, 0.0, model.dose_compartment), True
    elif isinstance(dose, SteadyState):
        check_steady_state(model, dose)
        out.ss_interval[i, s], out.ss_additive[i, s] = dose.interval, bool(dose.additive)
    if dose.amount < 0 or dose.duration < 0:
        raise ValueError(f"dose with negative amount or duration: {dose!r}")
    out.dose_valid[i, s] = True
    out.dose_time[i, s] = dose.time
    out.dose_amount[i, s] = dose.amount
    out.dose_duration[i, s] = dose.duration
    out.dose_compartment[i, s] = model.compartment_index(dose.compartment)
