"""A message a virtual device emits: when, on which topic, with which payload bytes."""

from __future__ import annotations

import json
from typing import Any, NamedTuple


class Message(NamedTuple):
    sim_t: float
    """Simulated time at which the device sends it, s since epoch (not the payload's `t`)."""
    topic: str
    payload: bytes
    elements: int = 1
    """Records in the payload (more than one for a pack)."""


def encode(document: Any) -> bytes:
    """Compact JSON, as a device with a small uplink would send it."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
