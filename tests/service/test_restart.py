"""`mipd run` killed with SIGKILL mid-stream and restarted: no acknowledged reading is lost
and every posterior equals the one computed offline from all the data (same seeds)."""

import json
import os
import time

import numpy as np
import pytest

from assimilation import load_model
from assimilation.online import from_bytes
from ingest.registry import Registry
from ingest.sqlite_store import SqliteStore
from mipdstream.service.state_db import PatientRecord, ServiceDB
from tests.publishing import AckedPublisher, wait_until
from tests.service.processes import MODEL, PARTICLES, SEED, Proc, plan, reference
from wire.topics import TopicKind, device_topic


@pytest.mark.slow
def test_kill_9_of_the_service_loses_nothing_and_converges_to_the_same_posteriors(mosquitto, tmp_path):
    origin = float(int(time.time()) - 30 * 3600)
    events = plan(origin)
    registry, db = Registry(tmp_path / "registry.sqlite"), ServiceDB(tmp_path / "service.sqlite")
    covariates = {}
    for k, patient in enumerate(events):
        covariates[patient] = {"CRCL": 80.0 + 5 * k, "WT": 75.0}
        for device in (f"pump-{k}", f"poc-{k}"):
            registry.register_device(device, "poc-meter")
            registry.enroll(device, patient, origin - 3600)
        db.add_patient(PatientRecord(patient, MODEL, covariates[patient], origin))
    registry.close()
    env = dict(os.environ, MIPD_BROKER_URL=mosquitto.url, MIPD_MQTT_PROTOCOL="5", MIPD_DATA_DIR=str(tmp_path),
               MIPD_HTTP_PORT="0", MIPD_FILTER_PARTICLES=str(PARTICLES), MIPD_FILTER_SEED=str(SEED),
               MIPD_REORDER_WINDOW_S="0.2", MIPD_CHECKPOINT_INTERVAL_S="0.5", MIPD_PUBLISH_ALERTS="false",
               JAX_PLATFORMS="cpu")
    service = Proc(["run"], env, "mipd:")
    messages = []
    for k, (patient, (doses, levels)) in enumerate(events.items()):
        messages += [(origin + t * 3600, f"pump-{k}", TopicKind.DOSE, {
            "id": f"d{i}", "seq": i, "t": origin + t * 3600, "drug": "vancomycin", "amt": a, "u": "mg",
            "route": "iv_infusion", "dur": 3600.0}) for i, (t, a) in enumerate(doses)]
        messages += [(origin + t * 3600, f"poc-{k}", TopicKind.READING, {
            "id": f"r{i}", "seq": i, "t": origin + t * 3600, "n": "20578-1", "u": "mg/L", "v": c})
            for i, (t, c) in enumerate(levels)]
    messages.sort(key=lambda m: m[0])
    publisher = AckedPublisher(mosquitto.url, "devices", protocol="5")
    kills = 0
    try:
        for n, (_, device, kind, body) in enumerate(messages):
            publisher.publish(device_topic(device, kind), f"{device}/{body['id']}", json.dumps(body))
            if n in (len(messages) // 3, 2 * len(messages) // 3):
                time.sleep(1.0)  # let some of it be assimilated and checkpointed
                service.kill9()
                kills += 1
                service.start()
            time.sleep(0.01)
        publisher.wait_all_acked(30)
        expected = {p: len(d) + len(l) for p, (d, l) in events.items()}
        assert wait_until(lambda: {p: (c.n_events if (c := db.checkpoint(p)) else 0) for p in events} == expected,
                          timeout=180, interval=0.5)
    finally:
        publisher.close()
        service.stop()
    assert kills == 2 and len(publisher.acked) == len(messages)
    store = SqliteStore(tmp_path / "mipd.sqlite")
    stored = sum(len(store.readings(p)) + len(store.doses(p)) for p in events)
    store.close()
    assert stored == len(messages)  # no acknowledged reading or dose lost
    model = load_model(MODEL)
    for patient, (doses, levels) in events.items():
        expected_posterior = reference(patient, covariates[patient], doses, levels)
        posterior = from_bytes(db.checkpoint(patient).posterior, model)
        np.testing.assert_allclose(np.asarray(posterior.state.log_params), np.asarray(expected_posterior.state.log_params),
                                   rtol=1e-4, atol=1e-4)
    db.close()
