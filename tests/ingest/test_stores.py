"""Both stores behind the one interface: dedup, time ranges, round trip of every field."""

import time

import pytest

from ingest.influx_store import InfluxStore, Spool
from ingest.records import Batch, DeadLetter, StoredDose, StoredReading
from ingest.registry import NotEnrolled, Registry, UnknownDevice
from ingest.sqlite_store import SqliteStore

T0 = 1_790_000_000.0


def readings(patient="P 1,x=y", device="dev-1", n=5):
    return [
        StoredReading(patient, device, f"r{i}", i, "20578-1", 10.0 + i, "mg/L", T0 + 60 * i, T0 + 60 * i + 1.5,
                      i == 0, 10_000.0 + 1000 * i, "ug/L")
        for i in range(n)
    ]


@pytest.fixture(params=["sqlite", "influxdb"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "s.sqlite")
    else:
        server = request.getfixturevalue("influxd")
        s = InfluxStore(server.url, "mipd_test", tmp_path / "spool")
    yield s
    s.close()


def test_readings_round_trip_and_are_stored_once(store):
    batch = Batch(readings())
    store.write(batch)
    store.write(batch)  # a redelivery of the same readings
    got = store.readings("P 1,x=y")
    assert got == readings()


def test_time_range_and_analyte_filter(store):
    store.write(Batch(readings()))
    got = store.readings("P 1,x=y", start=T0 + 60, end=T0 + 180)
    assert got == readings()[1:4]  # every field, bloq false (InfluxDB: no bloq field in the range)
    assert store.readings("P 1,x=y", analyte="751-8") == []
    assert store.readings("someone else") == []


def test_out_of_order_writes_come_back_in_measurement_order(store):
    late_first = list(reversed(readings()))
    for r in late_first:
        store.write(Batch([r]))
    assert [r.reading_id for r in store.readings("P 1,x=y")] == ["r0", "r1", "r2", "r3", "r4"]


def test_doses_and_dead_letters(store):
    dose = StoredDose("P2", "pump-1", "d1", 7, "vancomycin", 1000.0, "iv_infusion", T0, T0 + 2, 3600.0, "administered", T0 - 600)
    dead = [DeadLetter(T0, "mipd/v1/dev/x/reading", "x", "malformed_json", "bad", b"{", 0),
            DeadLetter(T0, "mipd/v1/dev/x/reading", "x", "out_of_range", "v too big", b"[..]", 1)]
    store.write(Batch(doses=[dose], dead_letters=dead))
    store.write(Batch(doses=[dose]))
    assert store.doses("P2") == [dose]
    assert store.dead_letters("x") == dead
    assert store.dead_letters("y") == []


def test_registry_resolves_the_patient_at_measurement_time(tmp_path):
    registry = Registry(tmp_path / "r.sqlite")
    with pytest.raises(UnknownDevice):
        registry.patient_at("cgm-1", T0)
    registry.register_device("cgm-1", "biosensor")
    with pytest.raises(NotEnrolled):
        registry.patient_at("cgm-1", T0)
    registry.enroll("cgm-1", "alice", T0)
    registry.enroll("cgm-1", "bob", T0 + 86400)  # the sensor moves on; alice's enrollment closes
    assert registry.patient_at("cgm-1", T0 + 10) == "alice"
    assert registry.patient_at("cgm-1", T0 + 86400 + 10) == "bob"
    with pytest.raises(NotEnrolled):
        registry.patient_at("cgm-1", T0 - 1)


def test_registry_sees_changes_made_by_another_process(tmp_path):
    ingest_side = Registry(tmp_path / "r.sqlite")
    admin_side = Registry(tmp_path / "r.sqlite")
    with pytest.raises(UnknownDevice):
        ingest_side.patient_at("poc-1", time.time())
    admin_side.register_device("poc-1", "poc-meter")
    admin_side.enroll("poc-1", "carol", T0)
    assert ingest_side.patient_at("poc-1", time.time()) == "carol"


def test_spools_sharing_a_directory_count_each_others_batches(tmp_path):
    """Processes of a scaled-out deployment may share the spool directory: a spool's count
    comes from disk when it starts and at every refresh, and never goes below zero."""
    first, second = Spool(tmp_path), Spool(tmp_path)
    path = first.append(["reading,patient_id=p value=1 1"])
    assert len(first) == 1 and len(second) == 0  # the second has not looked yet
    assert second.refresh() == 1 and Spool(tmp_path).refresh() == 1
    second.done(path)  # drained by the second process
    first.done(path)  # the first one finds it gone
    assert not path.exists() and len(first) == 0 and len(second) == 0
    refused = second.append(["bad line"])
    second.done(refused, refused=True)
    assert refused.with_suffix(".refused").exists() and first.refresh() == 0
