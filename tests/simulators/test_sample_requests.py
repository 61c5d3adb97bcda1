"""A point-of-care meter that samples when the service asks: a `SampleRequest` retained on its
schedule topic (wire contract v1) becomes one reading near the requested time."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest

from device_simulators.cohort import CohortConfig
from device_simulators.poc_meter import POC_PRESETS
from device_simulators.runner import run_simulation
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from ingest.mqtt import connect
from tests.simulators.mqtt_helpers import Collector
from wire.messages import SampleRequest
from wire.topics import TopicKind, device_topic

PUNCTUAL = CohortConfig(drug_meter=replace(POC_PRESETS["vancomycin"], skip_probability=0.0))


def test_a_meter_answers_a_sample_request_once_near_the_requested_time(mosquitto, tmp_path):
    start = time.time() - 6 * 3600.0
    requested_t = start + 3 * 3600.0
    cohort, ready = [], threading.Event()

    def ask(patients):
        cohort.extend(patients)
        ready.set()

    def service():
        """Plays the service: the request, the same request again (a retained redelivery), and
        one for an analyte the meter does not measure."""
        ready.wait(30)
        meter = cohort[0].meter_on_request.device_id
        client, _ = connect(mosquitto.url, "service", protocol="3.1.1")
        for request in (SampleRequest(id="sr-1", t=requested_t, n="20578-1", issued_at=time.time(), reason="test"),
                        SampleRequest(id="sr-1", t=requested_t, n="20578-1", issued_at=time.time(), reason="again"),
                        SampleRequest(id="sr-2", t=requested_t, n="751-8", issued_at=time.time(), reason="ANC")):
            client.publish(device_topic(meter, TopicKind.SCHEDULE), request.model_dump_json(), qos=1).wait_for_publish(5)
            time.sleep(0.2)
        client.disconnect()
        client.loop_stop()

    collector = Collector(mosquitto.url, topic_filter="mipd/v1/dev/+/reading")
    asker = threading.Thread(target=service)
    asker.start()
    try:
        summary = run_simulation(OneCompartmentVancomycin(), 1, 3600.0, mosquitto.url, None, seed=5, duration_h=6.0,
                                 progress=False, start_t=start, config=PUNCTUAL, on_cohort=ask, follow_requests=True,
                                 outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl")
        asker.join()
        time.sleep(0.5)
    finally:
        collector.close()
    assert summary.answered == 1 and summary.acked == summary.messages
    meter_topic = device_topic(cohort[0].meter_on_request.device_id, TopicKind.READING)
    scheduled = {json.loads(m.payload)["id"] for m in cohort[0].messages if m.topic == meter_topic}
    answers = [json.loads(p) for t, p in collector.messages if t == meter_topic and json.loads(p)["id"] not in scheduled]
    assert len(answers) == 1
    # the patient's timing error: SD 10 min (PocMeterParams.timing_sd_s), so within 4 SD
    assert abs(answers[0]["t"] - requested_t) < 2400.0 and answers[0]["n"] == "20578-1" and answers[0]["v"] > 0


def test_following_requests_needs_simulated_time_on_the_wall_clock(mosquitto):
    with pytest.raises(ValueError, match="speed > 0"):
        run_simulation(OneCompartmentVancomycin(), 1, 0.0, mosquitto.url, None, duration_h=1.0, progress=False,
                       follow_requests=True)
