"""`mipd conformance` against a real Mosquitto, fed by a client we did not write (`mosquitto_pub`):
a correct message passes, each malformed one fails with its documented reason, and the exit
code says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest

from device_simulators.cli import conformance
from device_simulators.conformance import watch
from device_simulators.malformed import malformed_cases
from tests.servers import services_required


@pytest.fixture
def mosquitto_pub():
    binary = shutil.which("mosquitto_pub")
    if binary is None:
        if services_required():
            pytest.fail("mosquitto_pub not found (Debian package mosquitto-clients)")
        pytest.skip("mosquitto_pub not found")
    return binary


def _publish(binary, port, topic, payload: bytes, tmp_path, *, retain=False, version="mqttv311"):
    body = tmp_path / "payload.bin"
    body.write_bytes(payload)
    command = [binary, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", version, "-t", topic, "-f", str(body)]
    subprocess.run(command + (["-r"] if retain else []), check=True, timeout=10)


def _watch_in_background(url, device_id, expected_count):
    ready, result = threading.Event(), {}

    def run():
        result["report"] = watch(url, device_id, timeout_s=30, max_messages=expected_count, ready=ready.set)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the watcher did not subscribe"
    return thread, result


def test_correct_message_passes_and_each_malformed_one_fails_with_its_reason(mosquitto, mosquitto_pub, tmp_path):
    cases = malformed_cases("vendor-3", time.time())
    thread, result = _watch_in_background(mosquitto.url, "vendor-3", 1 + len(cases))
    good = {"id": "cgm-3-000042", "seq": 42, "t": time.time() - 60, "n": "x-mipd-vancomycin-isf", "u": "mg/L", "v": 14.2}
    _publish(mosquitto_pub, mosquitto.port, "mipd/v1/dev/vendor-3/reading", json.dumps(good).encode(), tmp_path,
             version="mqttv5")
    for case in cases:
        _publish(mosquitto_pub, mosquitto.port, case.topic, case.payload, tmp_path)
    thread.join(30)
    report = result["report"]
    assert len(report.verdicts) == 1 + len(cases)
    assert report.verdicts[0].ok, report.verdicts[0].describe()
    judged = {(v.topic, v.payload): v for v in report.verdicts[1:]}
    for case in cases:
        verdict = judged[(case.topic, case.payload)]
        assert verdict.reasons == [case.expected], (case.name, verdict.describe())
    assert (report.passed, report.failed, report.exit_code) == (1, len(cases), 1)
    assert f"{len(cases)} failed" in report.summary()


def test_watcher_ignores_the_error_topic_and_other_devices(mosquitto, mosquitto_pub, tmp_path):
    thread, result = _watch_in_background(mosquitto.url, "vendor-4", 1)
    _publish(mosquitto_pub, mosquitto.port, "mipd/v1/dev/vendor-4/error", b'{"reason":"x"}', tmp_path)
    _publish(mosquitto_pub, mosquitto.port, "mipd/v1/dev/other-1/reading", b"not json", tmp_path)
    _publish(mosquitto_pub, mosquitto.port, "mipd/v1/dev/vendor-4/status", b'{"state":"online"}', tmp_path)
    thread.join(30)
    assert [(v.topic, v.ok) for v in result["report"].verdicts] == [("mipd/v1/dev/vendor-4/status", True)]


@pytest.mark.parametrize("status, code", [(b'{"state":"online","battery":0.9}', 0), (b'{"state":"asleep"}', 1)])
def test_conformance_command_exit_code(mosquitto, mosquitto_pub, tmp_path, status, code, capsys):
    # a retained status reaches the watcher as soon as it subscribes
    _publish(mosquitto_pub, mosquitto.port, "mipd/v1/dev/vendor-5/status", status, tmp_path, retain=True)
    assert conformance(mosquitto.url, "vendor-5", timeout_s=10, max_messages=1) == code
    out = capsys.readouterr().out
    first_line = out.splitlines()[0]
    assert first_line.startswith("PASS mipd/v1/dev/vendor-5/status" if code == 0 else "FAIL mipd/v1/dev/vendor-5/status")
    if code:
        assert "invalid_field: state" in out
    assert f"1 messages, {1 - code} passed, {code} failed" in out


def test_conformance_command_with_no_traffic_says_so(mosquitto, capsys):
    assert conformance(mosquitto.url, "silent-1", timeout_s=0.5) == 2
    assert "no messages seen" in capsys.readouterr().out


def test_the_simulators_own_traffic_passes_conformance(mosquitto, tmp_path):
    from device_simulators.cohort import simulate_cohort
    from device_simulators.runner import run_simulation
    from device_simulators.vancomycin_model import OneCompartmentVancomycin

    start = time.time() - 5 * 3600.0
    patient = simulate_cohort(OneCompartmentVancomycin(), 1, start, 4 * 3600.0, seed=6)[0]
    watched = {role: sum(f"/{device}/" in m.topic for m in patient.messages) for role, device in patient.devices.items()}
    assert watched["biosensor"] > 20 and watched["dosing"] >= 2  # a status and a dose at least
    reports = {role: _watch_in_background(mosquitto.url, patient.devices[role], watched[role])
               for role in ("biosensor", "dosing")}
    summary = run_simulation(OneCompartmentVancomycin(), 1, 0.0, mosquitto.url, None, seed=6, duration_h=4.0,
                             progress=False, start_t=start, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl")
    assert summary.acked == summary.messages
    for role, (thread, result) in reports.items():
        thread.join(30)
        report = result["report"]
        assert report.exit_code == 0, report.summary()
        assert len(report.verdicts) == watched[role]


def test_conformance_command_on_an_unreachable_broker_or_bad_device_id(capsys):
    from ingest.broker import free_port

    assert conformance(f"mqtt://127.0.0.1:{free_port()}", "vendor-6", timeout_s=1) == 2
    assert "could not connect" in capsys.readouterr().err
    assert conformance("mqtt://127.0.0.1:1", "bad/id", timeout_s=1) == 2
