"""`mipd demo`: the system on the embedded default, with nothing to install.

What it shows today (the live assimilation and alerts are not wired in yet): an
in-process MQTT broker, the ingest service with the embedded SQLite store, three virtual
patients whose devices publish over MQTT, one device that sends a malformed message and
is told why on its error topic, and the stored readings per patient.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import typer

from ingest.mqtt import connect
from mipdstream.config import Settings
from mipdstream.runtime import ingest_service
from wire import TopicKind, device_topic

# A 1 g vancomycin dose decaying with the typical adult elimination half-life of ~6 h
# (Rybak, Clin Infect Dis 2006;42 Suppl 1:S35): enough to make the readings look real.
PATIENTS = {"demo-patient-1": 1.0, "demo-patient-2": 0.7, "demo-patient-3": 1.4}


def _concentration(hours: float, clearance_factor: float) -> float:
    return 40.0 * math.exp(-math.log(2) / 6.0 * clearance_factor * (hours % 12.0))


def _devices(settings: Settings) -> list[tuple[str, str, float]]:
    from mipdstream.runtime import open_registry

    registry = open_registry(settings)
    devices = []
    for i, (patient, factor) in enumerate(PATIENTS.items(), start=1):
        device = f"demo-sensor-{i}"
        registry.register_device(device, "biosensor", "mipdstream demo")
        if not registry.enrollments(patient):
            registry.enroll(device, patient, time.time() - 30 * 24 * 3600)
        devices.append((device, patient, factor))
    registry.close()
    return devices


def _publish_forever(url: str, devices: list[tuple[str, str, float]], stop: threading.Event, speed: float) -> None:
    client, _ = connect(url, "demo-devices", protocol="3.1.1")
    start, seq = time.time(), 0
    while not stop.wait(0.5):
        simulated_hours = (time.time() - start) * speed / 3600
        for device, _patient, factor in devices:
            seq += 1
            reading = {
                "id": f"{device}-{seq}", "seq": seq, "t": time.time(), "n": "x-mipd-vancomycin-isf",
                "u": "mg/L", "v": round(_concentration(simulated_hours, factor), 3),
            }
            client.publish(device_topic(device, TopicKind.READING), json.dumps(reading), qos=1)
        if seq == 9:  # one faulty device message, to show what a sender is told
            client.publish(device_topic(devices[0][0], TopicKind.READING), b'{"id": "oops", "v": "twelve"}', qos=1)
    client.disconnect()
    client.loop_stop()


def run_demo(data_dir: Path, duration_s: float = 0.0, speed: float = 600.0) -> None:
    settings = Settings(broker_url="embedded", embedded_broker_port=0, store="sqlite", data_dir=data_dir)
    devices = _devices(settings)
    rejections: list[str] = []
    with ingest_service(settings) as service:
        typer.echo(f"mipd demo: embedded MQTT broker at {service.url}, store {settings.sqlite_path}")
        typer.echo("this demo shows ingest (validation, deduplication, storage); assimilation and alerts come next")
        listener, _ = connect(
            service.url, "demo-error-listener", protocol="3.1.1",
            subscriptions=[("mipd/v1/dev/+/error", 1)],
            on_message=lambda c, u, m: rejections.append(m.payload.decode()),
        )
        stop = threading.Event()
        publisher = threading.Thread(target=_publish_forever, args=(service.url, devices, stop, speed), daemon=True)
        publisher.start()
        started, shown = time.time(), 0
        try:
            while duration_s <= 0 or time.time() - started < duration_s:
                time.sleep(2.0)
                stats = service.consumer.stats
                counts = ", ".join(f"{p}: {len(service.store.readings(p))}" for p in PATIENTS)
                typer.echo(f"[{time.time() - started:5.0f} s] stored readings {counts}; rejected {stats.rejected}")
                for text in rejections[shown:]:
                    typer.echo(f"  device told on its error topic: {text}")
                shown = len(rejections)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            publisher.join(timeout=5)
            listener.disconnect()
            listener.loop_stop()
