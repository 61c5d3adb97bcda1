"""A device-side publisher for tests and benchmarks that counts only what got a PUBACK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable

from ingest.mqtt import connect
from wire import TopicKind, device_topic


def reading(device_id: str, seq: int, t: float, value: float = 12.5, *, unit: str = "mg/L",
            analyte: str = "20578-1", reading_id: str | None = None) -> dict:
    return {"id": reading_id or f"{device_id}-{seq}", "seq": seq, "t": t, "n": analyte, "u": unit, "v": value}


class AckedPublisher:
    """Publishes QoS 1 messages with a bounded number in flight; `acked` holds the ids
    whose PUBACK arrived (a PUBACK is the broker's promise, and the only one we count)."""

    def __init__(self, url: str, client_id: str, *, protocol: str = "auto", max_in_flight: int = 500):
        self.acked: list[str] = []
        self.send_times: dict[str, float] = {}
        self._pending: dict[int, str] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self._window = threading.Semaphore(max_in_flight)
        self.client, self.mqtt5 = connect(url, client_id, protocol=protocol)
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            message_id = self._pending.pop(mid, None)
            if message_id is None:
                self._early.add(mid)  # PUBACK before publish() returned its mid
                return
            self.acked.append(message_id)
        self._window.release()

    def publish(self, topic: str, message_id: str, payload: bytes | str) -> None:
        self._window.acquire()
        sent_at = time.time()
        # Never hold our lock while calling paho: its network thread holds paho's lock
        # while calling on_publish, which takes ours (paho issues #177, #354).
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != 0:
            self._window.release()
            raise RuntimeError(f"publish failed with rc={info.rc}")
        with self._lock:
            self.send_times[message_id] = sent_at
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.append(message_id)
                self._window.release()
            else:
                self._pending[info.mid] = message_id

    def publish_readings(self, readings: Iterable[tuple[str, dict]], rate_per_s: float | None = None) -> None:
        started = time.monotonic()
        for i, (device_id, body) in enumerate(readings):
            if rate_per_s:
                delay = started + i / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.publish(device_topic(device_id, TopicKind.READING), body["id"], json.dumps(body))

    def wait_all_acked(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.wait_all_acked(10)
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
