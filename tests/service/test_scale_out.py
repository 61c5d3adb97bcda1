"""Two ingest workers (MQTT 5 shared subscription) and two assimilation workers (patients
sharded by hash) against real Mosquitto and influxd; one worker is killed with SIGKILL
mid-stream and restarted. `mipd api` serves the care team from the workers' shared state."""

import json
import os
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

import httpx

from assimilation import load_model
from assimilation.online import from_bytes
from ingest.broker import free_port
from ingest.committed import shard_of
from mipdstream.api.forecasting import parameter_quantiles
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
    db.add_user("nurse", None, "clinician", "default")
    token = db.issue_credential("nurse", "api_key")
    base = dict(os.environ, MIPD_BROKER_URL=mosquitto.url, MIPD_MQTT_PROTOCOL="5", MIPD_STORE="influxdb",
                MIPD_INFLUX_URL=influxd.url, MIPD_SHARED_DIR=str(shared), MIPD_PUBLISH_ALERTS="false",
                MIPD_FILTER_PARTICLES=str(PARTICLES), MIPD_FILTER_SEED=str(SEED), MIPD_REORDER_WINDOW_S="0.2",
                MIPD_CHECKPOINT_INTERVAL_S="1", JAX_PLATFORMS="cpu")
    ingest = [Proc(["ingest"], dict(base, MIPD_DATA_DIR=str(tmp_path / f"ingest-{i}"), MIPD_INGEST_CLIENT_ID=f"ingest-{i}",
                                    MIPD_INGEST_SHARED_GROUP="ingest", MIPD_INGEST_NOTIFY="true"), "ingest:") for i in range(2)]
    workers = [Proc(["assimilate", "--shard-index", str(j), "--shard-count", "2"],
                    dict(base, MIPD_DATA_DIR=str(tmp_path / f"worker-{j}"), MIPD_INGEST_CLIENT_ID="worker"), "assimilate:")
               for j in range(2)]
    http_port = free_port("127.0.0.1")
    api = Proc(["api"], dict(base, MIPD_DATA_DIR=str(tmp_path / "api"), MIPD_INGEST_CLIENT_ID="api",
                             MIPD_HTTP_PORT=str(http_port)), "api:")
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
        late_dose = (24.5, 1000.0)
        _the_api_serves_the_workers_state(f"http://127.0.0.1:{http_port}", token, db, origin, late_dose)
        doses, levels = events[PATIENTS[0]]
        events[PATIENTS[0]] = (doses + [late_dose], levels)
        expected[PATIENTS[0]] += 1
        assert wait_until(all_assimilated, timeout=60, interval=0.5)  # the clinician's dose, by its owner
    finally:
        publisher.close()
        for proc in ingest + workers + [api]:
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


def _the_api_serves_the_workers_state(url: str, key: str, db: ServiceDB, origin: float, late_dose) -> None:
    """Posterior from the owner's checkpoint with its summary history; a clinician's dose is
    announced to the owning worker and shows on the live stream."""
    patient = PATIENTS[0]
    headers = {"X-API-Key": key}
    posterior = httpx.get(f"{url}/api/v1/patients/{patient}/posterior", headers=headers).json()
    assert posterior["source"] == "posterior" and posterior["time_h"] == pytest.approx(23.5)
    checkpoint = from_bytes(db.checkpoint(patient).posterior, load_model(MODEL))
    expected = parameter_quantiles(checkpoint)
    assert posterior["parameters"].keys() == expected.keys()
    for name, quantiles in expected.items():
        assert posterior["parameters"][name] == pytest.approx(quantiles, rel=1e-6), name
    assert posterior["history"] and posterior["history"][-1]["time_h"] == pytest.approx(23.5)
    heard = []

    def listen():
        with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=30) as stream:
            for line in stream.iter_lines():
                heard.append(line)
                if line == "event: dose":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(1.0)  # subscribed before the dose
    t, amount = late_dose
    response = httpx.post(f"{url}/api/v1/patients/{patient}/doses", headers=headers, json={
        "amount_mg": amount, "given_at": origin + 3600 * t, "duration_s": 3600, "drug": "vancomycin", "route": "iv_infusion"})
    assert response.status_code == 201, response.text
    listener.join(30)
    assert "event: dose" in heard
