"""The public wire contract, version 1: what a device sends and what it is told back.

Everything a device vendor needs to know lives here and in docs/WIRE.md. The package is
pure (no MQTT client, no database): ingest validates with it, the simulators and the
conformance checker speak through it.
"""

from wire.analytes import ANALYTES, DRUGS, Analyte, analyte
from wire.messages import (
    DeviceStatus,
    DoseEvent,
    Invalid,
    Reading,
    Rejection,
    RejectReason,
    SampleRequest,
    parse_dose_events,
    parse_readings,
    parse_status,
)
from wire.topics import (
    TOPIC_ROOT,
    DeviceTopic,
    TopicKind,
    device_topic,
    parse_topic,
    subscription,
)
from wire.units import UnitError, canonical_value

__all__ = [
    "ANALYTES",
    "DRUGS",
    "TOPIC_ROOT",
    "Analyte",
    "DeviceStatus",
    "DeviceTopic",
    "DoseEvent",
    "Invalid",
    "Reading",
    "RejectReason",
    "Rejection",
    "SampleRequest",
    "TopicKind",
    "UnitError",
    "analyte",
    "canonical_value",
    "device_topic",
    "parse_dose_events",
    "parse_readings",
    "parse_status",
    "parse_topic",
    "subscription",
]
