"""Turning a device's measurements into wire-contract reading messages."""

from __future__ import annotations

from collections.abc import Iterable

from device_simulators.device import DeviceIdentity
from device_simulators.message import Message, encode
from wire.topics import TopicKind


def reading_document(identity: DeviceIdentity, true_t: float, code: str, unit: str, value: float, bloq: bool = False) -> dict:
    """One `Reading` payload object; takes the device's next seq and id."""
    seq, rid = identity.take_seq()
    document = {"id": rid, "seq": seq, "t": identity.stamp(true_t), "n": code, "u": unit, "v": round(float(value), 6)}
    if bloq:
        document["bloq"] = True
    return document


def reading_messages(
    identity: DeviceIdentity,
    code: str,
    unit: str,
    samples: Iterable[tuple[float, float, bool]],
    upload_delay_s: float = 0.0,
) -> list[Message]:
    """One message per (true time, value, bloq) sample, sent `upload_delay_s` after measuring."""
    topic = identity.topic(TopicKind.READING)
    return [
        Message(t + upload_delay_s, topic, encode(reading_document(identity, t, code, unit, v, bloq)))
        for t, v, bloq in samples
    ]
