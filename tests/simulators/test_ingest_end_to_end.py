"""End to end through the running ingest (real Mosquitto, SQLite store): every malformed message is
answered on the device's error topic with its documented reason, and a simulated cohort with
network faults is stored completely and exactly once."""

from __future__ import annotations

import json
import time

import pytest

from device_simulators.cohort import CohortConfig, merged_messages, simulate_cohort
from device_simulators.malformed import malformed_cases
from device_simulators.runner import run_simulation
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from ingest.consumer import IngestConsumer
from ingest.mqtt import connect
from ingest.registry import Registry
from ingest.sqlite_store import SqliteStore
from tests.publishing import wait_until
from tests.simulators.mqtt_helpers import Collector
from wire.messages import RejectReason

NOW = time.time()


@pytest.fixture
def ingest(mosquitto, tmp_path):
    store = SqliteStore(tmp_path / "store.sqlite")
    registry = Registry(tmp_path / "registry.sqlite")
    consumer = IngestConsumer(mosquitto.url, store, registry, client_id="ingest-under-test").start()
    yield store, registry
    consumer.stop()
    store.close()
    registry.close()


def test_each_malformed_message_is_rejected_by_ingest_with_its_documented_reason(mosquitto, ingest):
    store, registry = ingest
    registry.register_device("vendor-1", "biosensor")
    registry.enroll("vendor-1", "patient-V", NOW - 86400)
    errors = Collector(mosquitto.url, "error-listener", "mipd/v1/dev/vendor-1/error")
    device, _ = connect(mosquitto.url, "vendor-1", protocol="3.1.1")
    cases = malformed_cases("vendor-1", time.time())
    try:
        for case in cases:
            before = len(errors.messages)
            device.publish(case.topic, case.payload, qos=1).wait_for_publish(5)
            if case.expected is RejectReason.BAD_TOPIC:
                continue  # not a topic ingest subscribes to; nobody to tell (docs/WIRE.md)
            assert wait_until(lambda: len(errors.messages) > before, 5), f"no rejection for {case.name}"
            rejections = [json.loads(payload) for _, payload in errors.messages[before:]]
            assert [r["reason"] for r in rejections] == [case.expected.value], (case.name, rejections)
            assert rejections[0]["topic"] == case.topic and rejections[0]["detail"]
        good = {"id": "good-1", "seq": 999, "t": time.time() - 30, "n": "20578-1", "u": "mg/L", "v": 15.0}
        device.publish("mipd/v1/dev/vendor-1/reading", json.dumps(good), qos=1).wait_for_publish(5)
        assert wait_until(lambda: len(store.readings("patient-V")) == 1, 5)
        assert [r.reading_id for r in store.readings("patient-V")] == ["good-1"]
        assert store.doses("patient-V") == []
        stateless = [c for c in cases if c.expected is not RejectReason.BAD_TOPIC]
        assert wait_until(lambda: len(store.dead_letters("vendor-1")) == len(stateless), 5)
    finally:
        device.disconnect()
        device.loop_stop()
        errors.close()


@pytest.mark.parametrize("upload_every_s", [0.0, 1800.0], ids=["one-per-message", "packs"])
def test_simulated_cohort_with_faults_is_stored_completely_and_once(mosquitto, ingest, tmp_path, upload_every_s):
    store, registry = ingest
    start = NOW - 7 * 3600.0
    config = CohortConfig()
    cohort = simulate_cohort(OneCompartmentVancomycin(), 2, start, 6 * 3600.0, 9, config)
    for patient in cohort:
        for role, device_id in patient.devices.items():
            registry.register_device(device_id, role)
            registry.enroll(device_id, patient.patient_id, start - 60)
    summary = run_simulation(
        OneCompartmentVancomycin(), 2, 0.0, mosquitto.url, "duplicate=0.1,reorder=0.1,offline=0.3", seed=9,
        duration_h=6.0, progress=False, start_t=start, config=config, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl", window=16,
        upload_every_s=upload_every_s,
    )
    assert summary.left_in_outbox == 0 and summary.records > len(merged_messages(cohort))  # duplicates
    if upload_every_s:
        assert summary.messages < summary.records / 3
    for patient in cohort:
        sent = [json.loads(m.payload) for m in patient.messages if m.topic.endswith("/reading")]
        assert wait_until(lambda: len(store.readings(patient.patient_id)) == len(sent), 15)
        stored = store.readings(patient.patient_id)
        assert sorted((r.device_id, r.reading_id) for r in stored) == sorted(
            (m.topic.split("/")[3], json.loads(m.payload)["id"]) for m in patient.messages if m.topic.endswith("/reading"))
        doses = [m for m in patient.messages if m.topic.endswith("/dose")]
        assert wait_until(lambda: len(store.doses(patient.patient_id)) == len(doses), 5)
    assert store.dead_letters() == []
