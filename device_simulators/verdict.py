"""Judging one received MQTT message against the wire contract, with the wire validators.

These are the very functions ingest validates with (wire.parse_topic, parse_readings,
parse_dose_events, parse_status), so a pass here means ingest will not reject the message
for its content; only the stateful checks (is the device known and enrolled) remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from wire.messages import Invalid, RejectReason, parse_dose_events, parse_readings, parse_status
from wire.topics import TopicKind, parse_topic


class Problem(NamedTuple):
    reason: RejectReason
    detail: str
    id: str | None = None
    seq: int | None = None


@dataclass
class Verdict:
    topic: str
    payload: bytes
    received_at: float
    """Wall time it was received, s since epoch (what `t` is checked against)."""
    kind: str | None
    """reading, dose or status; None when the topic is not a v1 device topic."""
    elements: int = 0
    """Objects in the payload (a pack has several)."""
    problems: list[Problem] = field(default_factory=list)
    retained: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reasons(self) -> list[RejectReason]:
        return [p.reason for p in self.problems]

    def describe(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'} {self.topic} ({len(self.payload)} B"
        head += f", {self.elements} element{'s' if self.elements != 1 else ''})" if self.kind else ")"
        if self.ok:
            return head
        lines = [head]
        for p in self.problems:
            where = f" [id={p.id} seq={p.seq}]" if p.id is not None or p.seq is not None else ""
            lines.append(f"    {p.reason.value}{where}: {p.detail}")
        return "\n".join(lines)


def check_message(topic: str, payload: bytes, received_at: float, retained: bool = False) -> Verdict:
    """The contract's verdict on a message a device published on `topic`."""
    parsed = parse_topic(topic)
    if parsed is None or parsed.kind == TopicKind.ERROR:
        # the error topic is ingest's to publish, never a device's
        return Verdict(topic, payload, received_at, None, 0,
                       [Problem(RejectReason.BAD_TOPIC, f"{topic!r} is not mipd/v1/dev/{{device_id}}/reading|dose|status")],
                       retained)
    kind = parsed.kind
    if kind == TopicKind.STATUS:
        results = [parse_status(payload)]
    elif kind == TopicKind.READING:
        results = parse_readings(payload, received_at)
    else:
        results = parse_dose_events(payload, received_at)
    problems = [Problem(r.reason, r.detail, r.id, r.seq) for r in results if isinstance(r, Invalid)]
    return Verdict(topic, payload, received_at, kind.value, len(results), problems, retained)
