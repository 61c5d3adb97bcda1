"""Network and clock faults a run can inject, and their command-line spelling.

`--faults "duplicate=0.01,reorder=0.02,skew=60,drift=20,offline=0.1,malformed"`:
each key is a field of `Faults` (or its short alias); a bare key means 1/True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from device_simulators.message import Message


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.0
    """Probability that a device sends a message twice (same id and seq), as after a lost PUBACK."""
    reorder: float = 0.0
    """Probability that a message is held back and sent after later ones."""
    reorder_delay_s: float = 900.0
    """Mean hold-back of a reordered message, simulated s (exponential)."""
    skew: float = 0.0
    """SD of device clock offsets, s; above 300 s some readings are rejected as `time_in_future`."""
    drift: float = 0.0
    """SD of device clock drift, ppm."""
    offline: float = 0.0
    """Fraction of simulated time the devices' uplink is offline (messages wait in the outbox)."""
    offline_mean_s: float = 1800.0
    """Mean length of an offline period, simulated s (exponential)."""
    malformed: bool = False
    """Also send one message of every kind the wire contract forbids (device_simulators.malformed)."""

    @classmethod
    def parse(cls, spec: str | None) -> Faults:
        if not spec:
            return cls()
        names = {f.name: f for f in fields(cls)}
        values = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, _, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in names:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(names)}")
            if names[key].type in ("bool", bool):
                values[key] = raw.strip().lower() not in ("0", "false", "no", "off")
            else:
                values[key] = float(raw) if raw else 1.0
        faults = replace(cls(), **values)
        for name in ("duplicate", "reorder", "offline"):
            if not 0.0 <= getattr(faults, name) < 1.0:
                raise ValueError(f"fault {name} is a probability/fraction, got {getattr(faults, name)}")
        return faults


def apply_message_faults(messages: Sequence[Message], faults: Faults, rng: np.random.Generator) -> list[Message]:
    """Duplicates and hold-backs, in the order the devices send; input order is kept otherwise."""
    if faults.duplicate <= 0 and faults.reorder <= 0:
        return list(messages)
    n = len(messages)
    held = rng.random(n) < faults.reorder
    delays = rng.exponential(faults.reorder_delay_s, n)
    doubled = rng.random(n) < faults.duplicate
    out = []
    for i, m in enumerate(messages):
        sent = m._replace(sim_t=m.sim_t + delays[i]) if held[i] else m
        out.append(sent)
        if doubled[i]:
            out.append(sent)
    out.sort(key=lambda m: m.sim_t)
    return out


def offline_windows(start_t: float, end_t: float, faults: Faults, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Simulated-time (start, end) periods with the uplink down, covering ~`faults.offline` of the run."""
    if faults.offline <= 0:
        return []
    mean_off = faults.offline_mean_s
    mean_on = mean_off * (1.0 - faults.offline) / faults.offline
    windows, t = [], start_t + rng.exponential(mean_on)
    while t < end_t:
        length = rng.exponential(mean_off)
        windows.append((t, min(t + length, end_t)))
        t += length + rng.exponential(mean_on)
    return windows
