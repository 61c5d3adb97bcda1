"""Helpers that score a simulated cohort's wire messages against its ground-truth file."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from device_simulators.message import Message
from wire.messages import Invalid, parse_dose_events, parse_readings
from wire.topics import TopicKind, parse_topic


def readings_by_device(messages: list[Message], received_at: float) -> dict[str, list]:
    """device id -> the wire-validated readings (CanonicalReading), in send order; fails on any rejection."""
    out: dict[str, list] = defaultdict(list)
    for m in messages:
        where = parse_topic(m.topic)
        if where.kind is not TopicKind.READING:
            continue
        for parsed in parse_readings(m.payload, received_at):
            assert not isinstance(parsed, Invalid), (m, parsed)
            out[where.device_id].append(parsed)
    return out


def doses_by_device(messages: list[Message], received_at: float) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for m in messages:
        where = parse_topic(m.topic)
        if where.kind is not TopicKind.DOSE:
            continue
        for parsed in parse_dose_events(m.payload, received_at):
            assert not isinstance(parsed, Invalid), (m, parsed)
            out[where.device_id].append(parsed)
    return out


def series(readings: list, analyte: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, canonical values, bloq flags) of one analyte's readings."""
    chosen = [r for r in readings if r.reading.n == analyte]
    return (
        np.array([r.reading.t for r in chosen]),
        np.array([r.value for r in chosen]),
        np.array([r.reading.bloq for r in chosen], dtype=bool),
    )


def truth_at(truth: dict, analyte: str, times: np.ndarray) -> np.ndarray:
    """The ground-truth file's latent trajectory of `analyte`, interpolated at `times`."""
    return np.interp(times, np.asarray(truth["times"]), np.asarray(truth["trajectories"][analyte]))
