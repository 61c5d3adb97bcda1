"""One message of every kind the wire contract forbids, each with the reason it must get.

A vendor's device (or ingest) is tested against these: ingest must answer each on the
device's error topic with exactly `expected`, and the conformance checker must fail each
with it. The expected reasons are those of `wire.messages` (parse_readings,
parse_dose_events, parse_status) and `wire.topics.parse_topic`. `unknown_device` and
`not_enrolled` are absent: they depend on ingest's registry, not on the message.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from wire.messages import EARLIEST_TIME_S, MAX_CLOCK_SKEW_S, MAX_DOSE_MG, MAX_PACK_LENGTH, MAX_PAYLOAD_BYTES, RejectReason
from wire.topics import TOPIC_ROOT, TopicKind, device_topic


class MalformedCase(NamedTuple):
    name: str
    topic: str
    payload: bytes
    expected: RejectReason


def _json(document) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def malformed_cases(device_id: str, now: float, id_prefix: str = "bad") -> list[MalformedCase]:
    """The forbidden messages of device `device_id`, valid but for one thing, at wall time `now` (s)."""
    reading_topic = device_topic(device_id, TopicKind.READING)
    dose_topic = device_topic(device_id, TopicKind.DOSE)
    status_topic = device_topic(device_id, TopicKind.STATUS)
    counter = iter(range(10**6))

    def reading(**change) -> dict:
        i = next(counter)
        base = {"id": f"{id_prefix}-{i}", "seq": i, "t": now - 60.0, "n": "20578-1", "u": "mg/L", "v": 15.0}
        base.update(change)
        return {k: v for k, v in base.items() if v is not _DROP}

    def dose(**change) -> dict:
        i = next(counter)
        base = {"id": f"{id_prefix}-{i}", "seq": i, "t": now - 60.0, "drug": "vancomycin", "amt": 1000.0,
                "u": "mg", "route": "iv_infusion", "dur": 3600.0}
        base.update(change)
        return {k: v for k, v in base.items() if v is not _DROP}

    R = RejectReason
    big_value = "x" * (MAX_PAYLOAD_BYTES + 1)
    pack = [reading() for _ in range(MAX_PACK_LENGTH + 1)]
    cases: list[tuple[str, str, bytes, RejectReason]] = [
        ("malformed_json", reading_topic, b'{"id": "bad-x", "seq": 1, "t": ', R.MALFORMED_JSON),
        ("not_utf8", reading_topic, b'{"id": "\xff\xfe"}', R.MALFORMED_JSON),
        ("not_an_object", reading_topic, b"42", R.INVALID_FIELD),
        ("empty_pack", reading_topic, b"[]", R.INVALID_FIELD),
        ("pack_too_long", reading_topic, _json(pack), R.INVALID_FIELD),
        ("payload_too_large", reading_topic, _json(reading(n=big_value)), R.PAYLOAD_TOO_LARGE),
        ("missing_value", reading_topic, _json(reading(v=_DROP)), R.INVALID_FIELD),
        ("missing_id", reading_topic, _json(reading(id=_DROP)), R.INVALID_FIELD),
        ("value_as_string", reading_topic, _json(reading(v="15.0")), R.INVALID_FIELD),
        ("seq_as_string", reading_topic, _json(reading(seq="7")), R.INVALID_FIELD),
        ("unknown_field", reading_topic, _json(reading(val=15.0)), R.INVALID_FIELD),
        ("bad_id_characters", reading_topic, _json(reading(id="has space/slash")), R.INVALID_FIELD),
        ("negative_seq", reading_topic, _json(reading(seq=-1)), R.INVALID_FIELD),
        ("value_nan", reading_topic, _json(reading()).replace(b'"v":15.0', b'"v":NaN'), R.INVALID_FIELD),
        ("unset_clock", reading_topic, _json(reading(t=0.0)), R.INVALID_FIELD),
        ("before_2020", reading_topic, _json(reading(t=EARLIEST_TIME_S - 86400.0)), R.INVALID_FIELD),
        ("time_in_future", reading_topic, _json(reading(t=now + MAX_CLOCK_SKEW_S + 3600.0)), R.TIME_IN_FUTURE),
        ("unknown_analyte", reading_topic, _json(reading(n="1234-5")), R.UNKNOWN_ANALYTE),
        ("unknown_unit", reading_topic, _json(reading(u="furlong")), R.UNKNOWN_UNIT),
        ("incompatible_unit", reading_topic, _json(reading(u="mmol/L")), R.INCOMPATIBLE_UNIT),
        ("out_of_range_high", reading_topic, _json(reading(v=5000.0)), R.OUT_OF_RANGE),
        ("out_of_range_negative", reading_topic, _json(reading(v=-3.0)), R.OUT_OF_RANGE),
        ("out_of_range_after_unit", reading_topic, _json(reading(u="g/L", v=1.0)), R.OUT_OF_RANGE),
        ("unknown_drug", dose_topic, _json(dose(drug="aspirin")), R.UNKNOWN_DRUG),
        ("infusion_without_duration", dose_topic, _json(dose(dur=_DROP)), R.INVALID_FIELD),
        ("bolus_with_duration", dose_topic, _json(dose(route="iv_bolus", dur=60.0)), R.INVALID_FIELD),
        ("unknown_route", dose_topic, _json(dose(route="inhaled", dur=_DROP)), R.INVALID_FIELD),
        ("zero_amount", dose_topic, _json(dose(amt=0.0)), R.INVALID_FIELD),
        ("dose_too_large", dose_topic, _json(dose(amt=MAX_DOSE_MG * 2)), R.OUT_OF_RANGE),
        ("dose_unit_incompatible", dose_topic, _json(dose(u="mL")), R.INCOMPATIBLE_UNIT),
        ("dose_unit_unknown", dose_topic, _json(dose(u="scoops")), R.UNKNOWN_UNIT),
        ("dose_unknown_status", dose_topic, _json(dose(status="refused")), R.INVALID_FIELD),
        ("dose_time_in_future", dose_topic, _json(dose(t=now + MAX_CLOCK_SKEW_S + 3600.0)), R.TIME_IN_FUTURE),
        ("status_unknown_state", status_topic, _json({"state": "sleeping"}), R.INVALID_FIELD),
        ("status_battery_over_1", status_topic, _json({"state": "online", "battery": 87}), R.INVALID_FIELD),
        ("bad_topic_kind", f"{TOPIC_ROOT}/{device_id}/readings", _json(reading()), R.BAD_TOPIC),
        ("bad_topic_depth", f"{TOPIC_ROOT}/{device_id}/reading/extra", _json(reading()), R.BAD_TOPIC),
    ]
    return [MalformedCase(name, topic, payload, expected) for name, topic, payload, expected in cases]


class _Drop:
    """Marker: remove this field from the otherwise valid message."""


_DROP = _Drop()
