"""The hand-written line protocol encoders against influxdb_client's `Point`, the reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from ingest.line_protocol import dead_letter_line, dose_line, ns, reading_line
from ingest.records import DeadLetter, StoredDose, StoredReading

# Tag values are never empty (device ids come from the topic, patients from the registry,
# analytes from validation); everything else may hold any character the escaping must handle.
tricky = st.text(st.sampled_from(list('ab ,="\\\n\t=é')) | st.characters(), min_size=1, max_size=12)
text = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
times = st.floats(min_value=0.0, max_value=4e9)


def point_reading(r: StoredReading) -> str:
    point = (
        Point("reading")
        .tag("patient_id", r.patient_id).tag("device_id", r.device_id).tag("analyte", r.analyte)
        .field("value", float(r.value)).field("unit", r.unit).field("reading_id", r.reading_id)
        .field("seq", int(r.seq)).field("received_at", float(r.received_at))
    )
    if r.bloq:  # written only when true (ingest/line_protocol.py)
        point = point.field("bloq", True)
    if r.original_value is not None:
        point = point.field("original_value", float(r.original_value)).field("original_unit", r.original_unit)
    return point.time(ns(r.measured_at), WritePrecision.NS).to_line_protocol()


def point_dose(d: StoredDose) -> str:
    point = (
        Point("dose")
        .tag("patient_id", d.patient_id).tag("device_id", d.device_id).tag("drug", d.drug)
        .field("dose_id", d.dose_id).field("seq", int(d.seq)).field("amount_mg", float(d.amount_mg))
        .field("route", d.route).field("status", d.status).field("received_at", float(d.received_at))
    )
    if d.duration_s is not None:
        point = point.field("duration_s", float(d.duration_s))
    if d.scheduled_at is not None:
        point = point.field("scheduled_at", float(d.scheduled_at))
    return point.time(ns(d.given_at), WritePrecision.NS).to_line_protocol()


def point_dead_letter(d: DeadLetter) -> str:
    point = (
        Point("dead_letter")
        .tag("device_id", d.device_id or "unknown").tag("reason", d.reason)
        .field("topic", d.topic).field("detail", d.detail)
        .field("payload", d.payload.decode("utf-8", "backslashreplace")).field("element", int(d.element))
    )
    return point.time(ns(d.received_at) + d.element, WritePrecision.NS).to_line_protocol()


readings = st.builds(
    StoredReading, tricky, tricky, tricky, st.integers(0, 2**53), tricky, finite, text, times, times,
    st.booleans(), st.none() | finite, st.none() | text,
)
doses = st.builds(
    StoredDose, tricky, tricky, text, st.integers(0, 2**53), tricky, finite, text, times, times,
    st.none() | finite, text, st.none() | times,
)
dead_letters = st.builds(
    DeadLetter, times, text, st.none() | tricky, tricky, text, st.binary(max_size=20), st.integers(0, 999),
)


@settings(max_examples=400, deadline=None)
@given(readings)
def test_reading_line_equals_point(reading):
    assert reading_line(reading) == point_reading(reading)


@settings(max_examples=400, deadline=None)
@given(doses)
def test_dose_line_equals_point(dose):
    assert dose_line(dose) == point_dose(dose)


@settings(max_examples=400, deadline=None)
@given(dead_letters)
def test_dead_letter_line_equals_point(dead_letter):
    assert dead_letter_line(dead_letter) == point_dead_letter(dead_letter)


def test_a_typical_reading_line():
    reading = StoredReading("p 1", "cgm,1", "r-1", 7, "20578-1", 10.0, "mg/L", 1.5, 2.25, False, 600.0, "ug/dL")
    assert reading_line(reading) == (
        r'reading,analyte=20578-1,device_id=cgm\,1,patient_id=p\ 1 original_unit="ug/dL",'
        'original_value=600,reading_id="r-1",received_at=2.25,seq=7i,unit="mg/L",value=10 1500000000'
    )
