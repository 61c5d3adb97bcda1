"""Two ingest workers (MQTT 5 shared subscription) and two assimilation workers (patients
sharded by hash) against real Mosquitto and influxd; one worker is killed with SIGKILL
mid-stream and restarted."""

import json
import os
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from assimilation import load_model
from assimilation.online import from_bytes
from ingest.committed import shard_of
from ingest.registry import Registry
from mipdstream.service.state_db import PatientRecord, ServiceDB
from tests.publishing import AckedPublisher, wait_until
from tests.service.processes import MODEL, PARTICLES, PATIENTS, SEED, Proc, plan, reference
from wire.topics import TopicKind, device_topic


@pytest.mark.slow
def test_sharded_workers_assimilate_each_reading_once_and_survive_kill_9(mosquitto, influxd, tmp_path):
    shared = tmp_path / "shared"
    origin = float(int(time.time()) - 30 * 3600)
    registry, db = Registry(shared / "registry.sqlite"), ServiceDB(shared / "service.sqlite")
    covariates = {p: {"CRCL": 90.0, "WT": 70.0 + k} for k, p in enumerate(PATIENTS)}
    for k, patient in enumerate(PATIENTS):
        for device in (f"pump-{k}", f"poc-{k}"):
            registry.register_device(device, "poc-meter")
            registry.enroll(device, patient, origin - 3600)
        db.add_patient(PatientRecord(patient, MODEL, covariates[patient], origin))
    registry.close()
    base = dict(os.environ, MIPD_BROKER_URL=mosquitto.url, MIPD_MQTT_PROTOCOL="5", MIPD_STORE="influxdb",
                MIPD_INFLUX_URL=influxd.url, MIPD_SHARED_DIR=str(shared), MIPD_PUBLISH_ALERTS="false",
                MIPD_FILTER_PARTICLES=str(PARTICLES), MIPD_FILTER_SEED=str(SEED), MIPD_REORDER_WINDOW_S="0.2",
                MIPD_CHECKPOINT_INTERVAL_S="1", JAX_PLATFORMS="cpu")
    ingest = [Proc(["ingest"], dict(base, MIPD_DATA_DIR=str(tmp_path / f"ingest-{i}"), MIPD_INGEST_CLIENT_ID=f"ingest-{i}",
                                    MIPD_INGEST_SHARED_GROUP="ingest", MIPD_INGEST_NOTIFY="true"), "ingest:") for i in range(2)]
    workers = [Proc(["assimilate", "--shard-index", str(j), "--shard-count", "2"],
                    dict(base, MIPD_DATA_DIR=str(tmp_path / f"worker-{j}"), MIPD_INGEST_CLIENT_ID="worker"), "assimilate:")
               for j in range(2)]
    events = plan(origin)
    messages = []
    for k, (patient, (doses, levels)) in enumerate(events.items()):
        for i, (t, amount) in enumerate(doses):
            messages.append((origin + t * 3600, f"pump-{k}", TopicKind.DOSE, {
                "id": f"d{i}", "seq": i, "t": origin + t * 3600, "drug": "vancomycin", "amt": amount, "u": "mg",
                "route": "iv_infusion", "dur": 3600.0}))
        for i, (t, c) in enumerate(levels):
            messages.append((origin + t * 3600, f"poc-{k}", TopicKind.READING, {
                "id": f"r{i}", "seq": i, "t": origin + t * 3600, "n": "20578-1", "u": "mg/L", "v": c}))
    messages.sort(key=lambda m: m[0])
    publisher = AckedPublisher(mosquitto.url, "devices", protocol="5")
    try:
        for n, (_, device, kind, body) in enumerate(messages):
            publisher.publish(device_topic(device, kind), f"{device}/{body['id']}", json.dumps(body))
            if n == len(messages) // 2:
                publisher.wait_all_acked(30)
                workers[1].kill9()
                time.sleep(0.5)
                workers[1].start()
            time.sleep(0.01)
        publisher.wait_all_acked(30)
        assert len(publisher.acked) == len(messages)
        expected = {p: len(d) + len(l) for p, (d, l) in events.items()}

        def all_assimilated():
            got = {p: (c.n_events if (c := db.checkpoint(p)) else 0) for p in PATIENTS}
            return got == expected

        assert wait_until(all_assimilated, timeout=180, interval=0.5), {p: db.checkpoint(p) and db.checkpoint(p).n_events for p in PATIENTS}
    finally:
        publisher.close()
        for proc in ingest + workers:
            proc.stop()
    writers = db.checkpoint_writers()
    model = load_model(MODEL)
    for patient, (doses, levels) in events.items():
        assert writers[patient] == f"shard {shard_of(patient, 2)}/2"
        checkpoint = db.checkpoint(patient)
        assert checkpoint.n_events == len(doses) + len(levels)  # each event exactly once
        expected_posterior = reference(patient, covariates[patient], doses, levels)
        posterior = from_bytes(checkpoint.posterior, model)
        np.testing.assert_allclose(np.asarray(posterior.state.log_params), np.asarray(expected_posterior.state.log_params),
                                   rtol=1e-4, atol=1e-4)
    assert {shard_of(p, 2) for p in PATIENTS} == {0, 1}  # both workers had patients
    db.close()
    # The workers wrote posterior bands beside the readings (what the Grafana dashboard plots).
    query = urllib.parse.urlencode({"db": "mipd", "q": 'SELECT count("q50") FROM "posterior" GROUP BY "patient_id"'})
    series = json.loads(urllib.request.urlopen(f"{influxd.url}/query?{query}").read())["results"][0]["series"]
    assert {s["tags"]["patient_id"] for s in series} == set(PATIENTS)
