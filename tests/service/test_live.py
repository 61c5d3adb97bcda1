"""The running system end to end against a real Mosquitto: devices publish, ingest stores,
the assimilator moves each posterior toward the truth, /metrics and /healthz report it."""

import json
import time
from pathlib import Path

import httpx
import jax.numpy as jnp
import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.simulate import amounts_at, dose_table_of, predict_readings
from assimilation.events import Reading
from assimilation.online import init, update
from mipdstream.config import Settings
from mipdstream.service.assimilator import patient_seed
from mipdstream.service.live import live_service
from mipdstream.service.state_db import PatientRecord
from tests.publishing import AckedPublisher, wait_until
from wire.topics import TopicKind, device_topic

MODEL = str(Path(__file__).parent / "models" / "serum_vancomycin.py")
TRUE_CL = {"fast": 7.5, "slow": 2.7}  # L/h; the prior's typical CL at CrCL 120 is 4.5 L/h


def levels(cl: float):
    """Serum levels (mg/L) after 1 g over 1 h at t = 0, simulated from the model itself with
    the typical parameters except clearance."""
    model = load_model(MODEL)
    typical = dict(zip(model.population.names, model.population.typical))
    log_params = jnp.log(jnp.array([cl if n == "CL" else typical[n] for n in model.population.names], jnp.float32))
    times = jnp.array([2.0, 4.0, 8.0, 12.0])
    amounts = amounts_at(model, log_params, dose_table_of(model, [Dose(0.0, 1000.0, None, 1.0)]), times)
    params = model.parameters(log_params)
    return [(float(t), float(predict_readings(model, params, x)[0])) for t, x in zip(times, amounts)]


@pytest.fixture
def settings(tmp_path, mosquitto):
    return Settings(data_dir=tmp_path, broker_url=mosquitto.url, mqtt_protocol="5", http_port=0, filter_particles=512,
                    reorder_window_s=0.1, assimilation_batch_window_ms=50, checkpoint_interval_s=1)


def test_devices_to_posterior_through_a_real_broker(settings, mosquitto):
    origin = float(int(time.time()) - 24 * 3600)
    with live_service(settings) as live:
        for name in TRUE_CL:
            live.db.add_patient(PatientRecord(name, MODEL, {"CRCL": 120.0, "WT": 70.0}, origin))
            for device in (f"{name}-pump", f"{name}-poc"):
                live.ingest.registry.register_device(device, "poc-meter")
                live.ingest.registry.enroll(device, name, origin - 60)
        publisher = AckedPublisher(live.ingest.url, "devices", protocol="5")
        for name, cl in TRUE_CL.items():
            dose = {"id": "d1", "seq": 1, "t": origin, "drug": "vancomycin", "amt": 1.0, "u": "g",
                    "route": "iv_infusion", "dur": 3600.0}
            publisher.publish(device_topic(f"{name}-pump", TopicKind.DOSE), f"{name}-d1", json.dumps(dose))
            for i, (t, c) in enumerate(levels(cl)):
                body = {"id": f"r{i}", "seq": i, "t": origin + 3600 * t, "n": "20578-1", "u": "mg/L", "v": round(c, 2)}
                publisher.publish(device_topic(f"{name}-poc", TopicKind.READING), f"{name}-r{i}", json.dumps(body))
        publisher.wait_all_acked(30)
        publisher.close()
        assert wait_until(lambda: live.assimilator.metrics.assimilated._value.get() == 10, timeout=120)
        for name, cl in TRUE_CL.items():
            posterior, t = live.assimilator.posterior(name)
            assert t == pytest.approx(12.0)
            state = posterior.state
            weights = np.exp(np.asarray(state.log_weights[0]))
            cl_particles = np.exp(np.asarray(state.log_params[0][:, 0]))
            mean_cl = float(np.sum(weights * cl_particles) / np.sum(weights))
            # Four levels pull the estimate from the prior's 4.5 L/h toward each patient's own
            # truth (opposite directions for the two patients) ...
            assert np.sign(np.log(mean_cl / 4.5)) == np.sign(np.log(cl / 4.5)), (name, mean_cl)
            # ... exactly as far as the filter run offline on the same data goes.
            offline = update(init(MODEL, {"CRCL": 120.0, "WT": 70.0}, patient_seed(settings.filter_seed, name), 512),
                             [Dose(0.0, 1000.0, None, 1.0)] + [Reading(t, round(c, 2), 0) for t, c in levels(cl)])
            np.testing.assert_allclose(np.asarray(state.log_params), np.asarray(offline.state.log_params), rtol=1e-4, atol=1e-4)
        health = httpx.get(f"{live.http_url}/healthz").json()
        assert health["patients"] == 2 and health["readings_stored"] == 8
        metrics = httpx.get(f"{live.http_url}/metrics").text
        assert "mipd_assimilated_events_total 10.0" in metrics
        assert "mipd_ingest_readings 8.0" in metrics
        assert 'mipd_assimilation_batch_patients_bucket{le="1.0"}' in metrics
