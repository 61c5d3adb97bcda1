"""Devices that upload in batches: a SenML-style pack (a JSON array) per device and upload period.

A wearable typically syncs through a phone every few minutes rather than per reading; the
wire contract allows an array of up to 1,000 complete records per message (docs/WIRE.md).
Packing is also what lets one publisher process carry far more readings per second than
MQTT messages per second.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from device_simulators.message import Message
from wire.messages import MAX_PACK_LENGTH, MAX_PAYLOAD_BYTES


def pack_uploads(messages: Sequence[Message], every_s: float, max_elements: int = MAX_PACK_LENGTH) -> list[Message]:
    """Merge each topic's single-record messages whose send times fall in the same `every_s`
    window (counted from the first message) into packs, each sent with its last record.

    Order within a topic is kept; the result is sorted by send time. `every_s <= 0` returns
    the messages unchanged.
    """
    if every_s <= 0 or not messages:
        return list(messages)
    origin = min(m.sim_t for m in messages)
    groups: dict[tuple[str, int], list[Message]] = defaultdict(list)
    out = []
    for m in messages:
        if m.topic.endswith(("/reading", "/dose")):
            groups[(m.topic, int((m.sim_t - origin) // every_s))].append(m)
        else:
            out.append(m)  # a status is one object, never a pack
    for (topic, _), group in groups.items():
        for chunk in _chunks(group, max_elements):
            if len(chunk) == 1:
                out.append(chunk[0])
                continue
            payload = b"[" + b",".join(m.payload for m in chunk) + b"]"
            out.append(Message(chunk[-1].sim_t, topic, payload, sum(m.elements for m in chunk)))
    out.sort(key=lambda m: m.sim_t)
    return out


def _chunks(group: list[Message], max_elements: int) -> list[list[Message]]:
    chunks, current, size = [], [], 2
    for m in group:
        if current and (len(current) >= max_elements or size + len(m.payload) + 1 > MAX_PAYLOAD_BYTES):
            chunks.append(current)
            current, size = [], 2
        current.append(m)
        size += len(m.payload) + 1
    if current:
        chunks.append(current)
    return chunks
