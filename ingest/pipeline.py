"""From raw MQTT messages to a durable `Batch` and the rejections to tell devices about.

Pure apart from the registry lookup: no MQTT, no store. The consumer feeds it messages
and writes what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ingest.records import Batch, DeadLetter, StoredDose, StoredReading
from ingest.registry import NotEnrolled, Registry, Roster, UnknownDevice
from wire import Invalid, RejectReason, Rejection, TopicKind, device_topic, parse_topic
from wire.messages import CanonicalDose, CanonicalReading, parse_dose_events, parse_readings, parse_status


class Incoming(NamedTuple):
    """A message as paho delivered it, stamped on arrival."""

    topic: str
    payload: bytes
    received_at: float
    mid: int = 0
    qos: int = 0


@dataclass
class Outcome:
    batch: Batch = field(default_factory=Batch)
    rejections: list[tuple[str, Rejection]] = field(default_factory=list)
    """(error topic, rejection) pairs to publish after the batch is committed."""
    statuses: list[tuple[str, object, float]] = field(default_factory=list)


def _reject(outcome: Outcome, message: Incoming, device_id: str | None, bad: Invalid, element: int) -> None:
    outcome.batch.dead_letters.append(
        DeadLetter(message.received_at, message.topic, device_id, bad.reason.value, bad.detail, message.payload, element)
    )
    if device_id is not None:
        rejection = Rejection(
            reason=bad.reason, detail=bad.detail, topic=message.topic, id=bad.id, seq=bad.seq,
            received_at=message.received_at,
        )
        outcome.rejections.append((device_topic(device_id, TopicKind.ERROR), rejection))


def _resolve(roster: Roster, device_id: str, t: float) -> str | Invalid:
    try:
        return roster.patient_at(device_id, t)
    except UnknownDevice:
        return Invalid(RejectReason.UNKNOWN_DEVICE, f"device {device_id!r} is not registered")
    except NotEnrolled:
        return Invalid(RejectReason.NOT_ENROLLED, f"device {device_id!r} is not enrolled to a patient at t={t}")


def _reading(r: CanonicalReading, device_id: str, patient_id: str, received_at: float) -> StoredReading:
    m = r.reading
    return StoredReading(
        patient_id, device_id, m.id, m.seq, m.n, r.value, r.unit, m.t, received_at, m.bloq, m.v, m.u
    )


def _dose(d: CanonicalDose, device_id: str, patient_id: str, received_at: float) -> StoredDose:
    m = d.dose
    return StoredDose(
        patient_id, device_id, m.id, m.seq, m.drug, d.amount_mg, m.route, m.t, received_at,
        m.dur, m.status, m.scheduled_t,
    )


def classify(messages: list[Incoming], registry: Registry) -> Outcome:
    """Validate, resolve the patient and sort each message element into stored or rejected."""
    outcome = Outcome()
    roster = registry.roster()  # one snapshot per batch, not a SQLite round trip per message
    for message in messages:
        where = parse_topic(message.topic)
        if where is None or where.kind is TopicKind.ERROR:
            bad = Invalid(RejectReason.BAD_TOPIC, f"{message.topic!r} is not a v1 device topic one may publish on")
            _reject(outcome, message, None, bad, 0)
            continue
        if where.kind is TopicKind.STATUS:
            status = parse_status(message.payload)
            if isinstance(status, Invalid):
                _reject(outcome, message, where.device_id, status, 0)
            else:
                outcome.statuses.append((where.device_id, status, message.received_at))
            continue
        parse = parse_readings if where.kind is TopicKind.READING else parse_dose_events
        for element, parsed in enumerate(parse(message.payload, message.received_at)):
            if isinstance(parsed, Invalid):
                _reject(outcome, message, where.device_id, parsed, element)
                continue
            body = parsed[0]
            patient = _resolve(roster, where.device_id, body.t)
            if isinstance(patient, Invalid):
                _reject(outcome, message, where.device_id, patient._replace(id=body.id, seq=body.seq), element)
            elif isinstance(parsed, CanonicalReading):
                outcome.batch.readings.append(_reading(parsed, where.device_id, patient, message.received_at))
            else:
                outcome.batch.doses.append(_dose(parsed, where.device_id, patient, message.received_at))
    return outcome
