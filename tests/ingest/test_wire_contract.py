"""The stateless half of validation: every documented reason, and unit conversion."""

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import RejectReason, parse_topic
from wire.messages import CanonicalDose, CanonicalReading, Invalid, parse_dose_events, parse_readings, parse_status
from wire.units import UnitError, conversion_factor

NOW = time.time()


def reading(**overrides):
    body = {"id": "r-1", "seq": 1, "t": NOW - 60, "n": "20578-1", "u": "mg/L", "v": 12.5}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def only(results):
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize(
    ("unit", "canonical", "factor"),
    [
        ("ug/mL", "mg/L", 1.0),
        ("mg/dL", "mg/L", 10.0),
        ("ug/L", "mg/L", 1e-3),
        ("10*3/uL", "10*9/L", 1.0),
        ("/nL", "10*9/L", 1.0),
        ("{INR}", "{INR}", 1.0),
        ("1", "{INR}", 1.0),
        ("g", "mg", 1000.0),
    ],
)
def test_ucum_units_convert_by_the_units_library(unit, canonical, factor):
    assert conversion_factor(unit, canonical) == pytest.approx(factor)


@pytest.mark.parametrize(("unit", "reason"), [("mg", "incompatible_unit"), ("mmol/L", "incompatible_unit"), ("mgg/L", "unknown_unit")])
def test_unit_errors_name_the_reason(unit, reason):
    with pytest.raises(UnitError) as err:
        conversion_factor(unit, "mg/L")
    assert err.value.reason == reason


def test_valid_reading_is_converted_to_the_canonical_unit():
    parsed = only(parse_readings(reading(u="ug/L", v=12500.0), NOW))
    assert isinstance(parsed, CanonicalReading)
    assert parsed.value == pytest.approx(12.5)
    assert parsed.unit == "mg/L"


@pytest.mark.parametrize(
    ("payload", "reason", "mentions"),
    [
        (b"{not json", RejectReason.MALFORMED_JSON, "JSON"),
        (b"\xff\xfe", RejectReason.MALFORMED_JSON, "UTF-8"),
        (b"42", RejectReason.INVALID_FIELD, "object"),
        (reading(seq=...), RejectReason.INVALID_FIELD, "seq"),
        (reading(v="12.5"), RejectReason.INVALID_FIELD, "v"),
        (reading(seq=-1), RejectReason.INVALID_FIELD, "seq"),
        (reading(id="has space"), RejectReason.INVALID_FIELD, "id"),
        (reading(extra=1), RejectReason.INVALID_FIELD, "extra"),
        (reading(n="99999-9"), RejectReason.UNKNOWN_ANALYTE, "99999-9"),
        (reading(u="mg"), RejectReason.INCOMPATIBLE_UNIT, "mg"),
        (reading(u="furlong"), RejectReason.UNKNOWN_UNIT, "furlong"),
        (reading(v=-3.0), RejectReason.OUT_OF_RANGE, "plausible"),
        (reading(v=5000.0), RejectReason.OUT_OF_RANGE, "plausible"),
        (reading(t=NOW + 3600), RejectReason.TIME_IN_FUTURE, "after"),
        (reading(t=86400.0), RejectReason.INVALID_FIELD, "clock"),
        (b"[" + b",".join([reading()] * 1001) + b"]", RejectReason.INVALID_FIELD, "array"),
        (b'{"pad": "' + b"x" * 300_000 + b'"}', RejectReason.PAYLOAD_TOO_LARGE, "bytes"),
    ],
)
def test_each_bad_reading_gets_its_documented_reason(payload, reason, mentions):
    parsed = only(parse_readings(payload, NOW))
    assert isinstance(parsed, Invalid)
    assert parsed.reason is reason
    assert mentions in parsed.detail


def test_a_pack_is_validated_element_by_element():
    pack = b"[" + reading(id="a", seq=1) + b"," + reading(id="b", seq=2, v=-1.0) + b"]"
    good, bad = parse_readings(pack, NOW)
    assert isinstance(good, CanonicalReading) and good.reading.id == "a"
    assert isinstance(bad, Invalid) and bad.reason is RejectReason.OUT_OF_RANGE and bad.id == "b" and bad.seq == 2


def dose(**overrides):
    body = {"id": "d-1", "seq": 3, "t": NOW - 60, "drug": "vancomycin", "amt": 1.0, "u": "g",
            "route": "iv_infusion", "dur": 3600.0}
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_dose_amount_is_converted_to_mg():
    parsed = only(parse_dose_events(dose(), NOW))
    assert isinstance(parsed, CanonicalDose)
    assert parsed.amount_mg == pytest.approx(1000.0)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (dose(drug="aspirin"), RejectReason.UNKNOWN_DRUG),
        (dose(dur=...), RejectReason.INVALID_FIELD),
        (dose(route="oral"), RejectReason.INVALID_FIELD),
        (dose(u="mL"), RejectReason.INCOMPATIBLE_UNIT),
        (dose(amt=50.0, u="g"), RejectReason.OUT_OF_RANGE),
        (dose(amt=0.0), RejectReason.INVALID_FIELD),
        (dose(route="intrathecal"), RejectReason.INVALID_FIELD),
    ],
)
def test_each_bad_dose_gets_its_documented_reason(payload, reason):
    parsed = only(parse_dose_events(payload, NOW))
    assert isinstance(parsed, Invalid) and parsed.reason is reason


def test_topics_carry_device_identity_only():
    assert parse_topic("mipd/v1/dev/cgm-7/reading") == ("cgm-7", "reading")
    assert parse_topic("mipd/v1/dev/cgm-7/reading/extra") is None
    assert parse_topic("mipd/v1/patient/p1/reading") is None
    assert parse_topic("mipd/v1/dev/+/reading") is None


def test_status_payload():
    assert parse_status(b'{"state": "offline"}').state == "offline"
    assert isinstance(parse_status(b'{"state": "asleep"}'), Invalid)


# Values of every JSON type, with the edge cases of each field's constraints.
_json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([NOW, NOW + 1e4, 1.0e9, 0.0, -1.0, 1e308, 12.5, 0.001, 1e6]),
    st.sampled_from(["r-1", "", "x" * 65, "bad id", "20578-1", "mg/L", "ug/mL", "mmol/L", "10", "{INR}", "é"]),
    st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
_fields = st.sampled_from(["id", "seq", "t", "n", "u", "v", "bloq", "val", "extra"])


@settings(max_examples=400, deadline=None)
@given(
    drop=st.sets(st.sampled_from(["id", "seq", "t", "n", "u", "v"]), max_size=2),
    changes=st.dictionaries(_fields, _json_values, max_size=3),
)
def test_the_single_reading_fast_path_agrees_with_the_general_path(drop, changes):
    """`parse_readings` validates a one-object payload straight from JSON; with a leading space
    the same payload takes the general path (parse, then validate). Same outcome, same words."""
    body = {"id": "r-1", "seq": 1, "t": NOW - 60, "n": "20578-1", "u": "mg/L", "v": 12.5}
    body = {k: v for k, v in {**body, **changes}.items() if k not in drop}
    payload = json.dumps(body).encode()
    assert parse_readings(payload, NOW) == parse_readings(b" " + payload, NOW)
