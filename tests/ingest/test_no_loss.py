"""Nothing acknowledged is lost: kill -9 of ingest mid-stream, and InfluxDB going away.

The publisher counts a reading as sent only when the broker's PUBACK arrived. Every such
reading must end up stored exactly once.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from ingest.consumer import IngestConsumer
from ingest.influx_store import InfluxStore
from ingest.registry import Registry
from ingest.sqlite_store import SqliteStore
from tests.publishing import AckedPublisher, reading, wait_until

DEVICES = [f"cgm-{i:02d}" for i in range(20)]
N_READINGS = 10_000


def enroll_all(registry_path):
    registry = Registry(registry_path)
    for device in DEVICES:
        registry.register_device(device, "biosensor")
        registry.enroll(device, f"patient-{device}", time.time() - 86400)
    registry.close()


def stream(n, start=0):
    t0 = time.time() - 3600
    for i in range(start, start + n):
        device = DEVICES[i % len(DEVICES)]
        yield device, reading(device, i, t0 + i * 0.01, 5.0 + (i % 100) / 10)


def stored_ids(store) -> list[str]:
    ids = []
    for device in DEVICES:
        ids += [r.reading_id for r in store.readings(f"patient-{device}")]
    return ids


def influx_ids(url, database="mipd") -> list[str]:
    store = InfluxStore(url, database, "/tmp/mipd-unused-spool", create_database=False)
    try:
        return [row["reading_id"] for row in store._query('SELECT "reading_id", "value" FROM "reading"')]
    finally:
        store.close()


class IngestProcess:
    def __init__(self, env):
        self.env = env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "mipdstream.cli", "ingest"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait for "ingest: broker ..." on stderr: connected, persistent session subscribed.
        line = self.proc.stderr.readline().decode()
        assert line.startswith("ingest:"), line

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["sqlite", "influxdb"])
def test_kill_9_at_random_moments_loses_no_acknowledged_reading(store_kind, mosquitto, tmp_path, request):
    env = dict(os.environ, MIPD_BROKER_URL=mosquitto.url, MIPD_DATA_DIR=str(tmp_path), MIPD_STORE=store_kind,
               MIPD_MQTT_PROTOCOL="5", MIPD_INGEST_CLIENT_ID="ingest-crash-test")
    if store_kind == "influxdb":
        env["MIPD_INFLUX_URL"] = request.getfixturevalue("influxd").url
    enroll_all(tmp_path / "registry.sqlite")
    ingest = IngestProcess(env)
    ingest.start()
    publisher = AckedPublisher(mosquitto.url, "crash-test-devices", protocol="5")
    sender = threading.Thread(target=publisher.publish_readings, args=(stream(N_READINGS), 2500.0))
    sender.start()
    rng = random.Random(20261125)
    kills = 0
    # Kill points follow the stream's progress (not the wall clock), so a slow machine still
    # gets every kill; a kill after the publisher is done hits ingest while it drains the backlog.
    for fraction in (0.2, 0.45, 0.7, 0.9):
        assert wait_until(lambda: len(publisher.acked) >= fraction * N_READINGS, timeout=60)
        time.sleep(rng.uniform(0.0, 0.3))
        ingest.kill9()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.5))
        ingest.start()
    sender.join()
    publisher.close()
    assert kills == 4 and len(publisher.acked) == N_READINGS

    def everything_stored():
        if store_kind == "sqlite":
            return len(stored_ids(SqliteStore(tmp_path / "mipd.sqlite"))) >= N_READINGS
        return len(influx_ids(env["MIPD_INFLUX_URL"])) >= N_READINGS

    wait_until(everything_stored, timeout=60, interval=0.5)
    ingest.stop()
    if store_kind == "sqlite":
        ids = stored_ids(SqliteStore(tmp_path / "mipd.sqlite"))
    else:
        ids = influx_ids(env["MIPD_INFLUX_URL"])
    duplicates = [i for i, c in Counter(ids).items() if c > 1]
    assert duplicates == []
    assert set(publisher.acked) - set(ids) == set()


@pytest.mark.slow
def test_influxdb_down_mid_stream_loses_nothing(mosquitto, influxd, tmp_path):
    enroll_all(tmp_path / "registry.sqlite")
    store = InfluxStore(influxd.url, "mipd", tmp_path / "spool", drain_interval_s=0.2)
    consumer = IngestConsumer(mosquitto.url, store, Registry(tmp_path / "registry.sqlite"), protocol="5").start()
    publisher = AckedPublisher(mosquitto.url, "outage-devices", protocol="5")
    try:
        publisher.publish_readings(stream(2000, 0), rate_per_s=2000)
        influxd.stop()
        publisher.publish_readings(stream(2000, 2000), rate_per_s=2000)
        publisher.wait_all_acked()
        assert wait_until(lambda: consumer.stats.received >= 4000, 20)
        assert len(store.spool) > 0  # the outage really happened and went to disk
        influxd.start()
        publisher.publish_readings(stream(1000, 4000), rate_per_s=2000)
        publisher.wait_all_acked()
        assert wait_until(lambda: len(store.spool) == 0 and len(stored_ids(store)) >= 5000, 30, 0.5)
    finally:
        publisher.close()
        consumer.stop()
        store.close()
    ids = influx_ids(influxd.url)
    assert len(ids) == len(set(ids)) == 5000
    assert set(publisher.acked) == set(ids)


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(mosquitto, tmp_path):
    """The consumer's own network loop (ingest.mqtt.SelectLoop) reconnects after the broker
    goes away with a backlog queued for it, resubscribes, and stores what was acknowledged
    before and after the restart exactly once."""
    enroll_all(tmp_path / "registry.sqlite")
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = IngestConsumer(mosquitto.url, store, Registry(tmp_path / "registry.sqlite"), protocol="5").start()
    acked = []
    try:
        before = AckedPublisher(mosquitto.url, "restart-devices-1", protocol="5")
        before.publish_readings(stream(3000, 0))
        before.wait_all_acked()
        acked += before.acked
        before.client.loop_stop()
        mosquitto.stop()  # a SIGTERM: the broker saves what it has not delivered yet
        mosquitto.start()
        after = AckedPublisher(mosquitto.url, "restart-devices-2", protocol="5")
        after.publish_readings(stream(1000, 3000), rate_per_s=2000)
        after.close()
        acked += after.acked
        assert len(acked) == 4000
        assert wait_until(lambda: len(stored_ids(store)) >= 4000, 60, 0.2)
    finally:
        consumer.stop()
    ids = stored_ids(store)
    store.close()
    assert len(ids) == len(set(ids)) == 4000
    assert set(acked) == set(ids)
