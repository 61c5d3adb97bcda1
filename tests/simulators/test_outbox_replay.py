"""The on-disk outbox: a device that is offline, restarted while offline, or cut off by a broker
outage uploads its whole backlog when it reconnects, against a real Mosquitto; nothing is lost."""

from __future__ import annotations

import json
import time

import pytest

from device_simulators.cohort import CohortConfig, merged_messages, simulate_cohort
from device_simulators.device import DeviceIdentity
from device_simulators.outbox import MemoryOutbox, FileOutbox
from device_simulators.reading import reading_messages
from device_simulators.runner import run_simulation
from device_simulators.uplink import Uplink
from device_simulators.vancomycin_model import OneCompartmentVancomycin
from ingest.mqtt import connect
from tests.publishing import wait_until
from tests.simulators.mqtt_helpers import Collector

NOW = time.time()


def _readings(device_id: str, count: int) -> list[tuple[str, bytes]]:
    identity = DeviceIdentity(device_id)
    samples = [(NOW - 3600 + i, 10.0 + (i % 7), False) for i in range(count)]
    return [(m.topic, m.payload) for m in reading_messages(identity, "x-mipd-vancomycin-isf", "mg/L", samples)]


def _ids(messages: list[tuple[str, bytes]]) -> set[tuple[str, str]]:
    """(topic, id) of the readings and doses (a status has no id)."""
    return {(topic, json.loads(payload)["id"]) for topic, payload in messages if not topic.endswith("/status")}


@pytest.mark.parametrize("outbox_kind", ["file", "memory"])
def test_outbox_keeps_order_until_acknowledged_and_hands_out_again_after_rewind(tmp_path, outbox_kind):
    outbox = FileOutbox(tmp_path / "outbox") if outbox_kind == "file" else MemoryOutbox()
    outbox.put_many([("t", b"a"), ("t", b"b"), ("t", b"c")])
    first = outbox.next_unsent(2)
    assert [p for _, _, p in first] == [b"a", b"b"]
    assert [p for _, _, p in outbox.next_unsent(5)] == [b"c"]
    assert outbox.next_unsent(5) == []
    outbox.ack_many([first[0][0]])
    assert len(outbox) == 2
    outbox.rewind()
    assert [p for _, _, p in outbox.next_unsent(5)] == [b"b", b"c"]
    outbox.close()


def test_file_outbox_survives_the_device_process(tmp_path):
    outbox = FileOutbox(tmp_path / "outbox")
    outbox.put_many(_readings("cgm-1", 50))
    outbox.ack_many([row for row, _, _ in outbox.next_unsent(20)])
    outbox.close()
    reopened = FileOutbox(tmp_path / "outbox")
    assert len(reopened) == 30
    assert _ids([(t, p) for _, t, p in reopened.next_unsent(100)]) == _ids(_readings("cgm-1", 50)[20:])
    reopened.close()


def test_file_outbox_cuts_a_torn_record_and_never_reuses_a_row_id(tmp_path):
    outbox = FileOutbox(tmp_path / "o")
    outbox.put_many(_readings("cgm-2", 3))
    outbox.ack_many([row for row, _, _ in outbox.next_unsent(3)])  # all acknowledged: files emptied
    outbox.put_many(_readings("cgm-2", 5)[3:])
    ids_before = [row for row, _, _ in outbox.next_unsent(10)]
    outbox.close()
    with open(tmp_path / "o" / "messages.log", "ab") as f:
        f.write(b"\x07\x00\x00")  # the device died in the middle of a write
    with open(tmp_path / "o" / "acked.log", "ab") as f:
        f.write(b"\x01")
    reopened = FileOutbox(tmp_path / "o")
    assert [row for row, _, _ in reopened.next_unsent(10)] == ids_before and min(ids_before) > 3
    reopened.put_many(_readings("cgm-2", 6)[5:])
    reopened.ack_many(ids_before)
    reopened.close()
    last = FileOutbox(tmp_path / "o")
    assert _ids([(t, p) for _, t, p in last.next_unsent(10)]) == _ids(_readings("cgm-2", 6)[5:])
    last.close()


def test_file_outbox_compacts_its_log_and_keeps_the_unacknowledged(tmp_path):
    outbox = FileOutbox(tmp_path / "o")
    outbox.COMPACT_AFTER_ACKS = 10
    sent = _readings("cgm-3", 50)
    outbox.put_many(sent)
    size_before = (tmp_path / "o" / "messages.log").stat().st_size
    outbox.ack_many([row for row, _, _ in outbox.next_unsent(40)])
    assert (tmp_path / "o" / "messages.log").stat().st_size < size_before / 3
    outbox.close()
    reopened = FileOutbox(tmp_path / "o")
    assert _ids([(t, p) for _, t, p in reopened.next_unsent(100)]) == _ids(sent[40:])
    reopened.close()


def test_offline_backlog_is_uploaded_after_a_restart_while_offline(mosquitto, tmp_path):
    collector = Collector(mosquitto.url)
    sent = _readings("cgm-7", 600)
    try:
        outbox = FileOutbox(tmp_path / "outbox")
        uplink = Uplink(mosquitto.url, "cgm-7", outbox)
        outbox.put_many(sent[:100])
        assert uplink.drain(10)
        uplink.online = False  # the patch loses its phone
        outbox.put_many(sent[100:])
        for _ in range(20):
            uplink.service(timeout_s=0.01)
        assert uplink.counters.published == 100 and len(outbox) == 500
        uplink.close()
        outbox.close()  # ... and the device reboots before it is back in range

        outbox = FileOutbox(tmp_path / "outbox")
        uplink = Uplink(mosquitto.url, "cgm-7", outbox)
        assert uplink.drain(20)
        uplink.close()
        outbox.close()
        assert wait_until(lambda: set(collector.ids()) == _ids(sent), 10), len(set(collector.ids()))
        assert len(collector.ids()) == 600  # a clean reconnect resends nothing twice
    finally:
        collector.close()


def _wait_until_subscribed_again(url: str, collector: Collector) -> None:
    """The collector is back once a probe published now reaches it (its subscription is live)."""
    assert wait_until(collector.client.is_connected, 20)
    probe, _ = connect(url, "probe", protocol="3.1.1")
    try:
        for attempt in range(100):
            probe.publish("mipd/v1/dev/probe/status", b'{"state":"online"}', qos=1).wait_for_publish(5)
            if wait_until(lambda: any("/probe/" in topic for topic, _ in collector.messages), 0.2):
                return
        pytest.fail("the collector did not resubscribe after the broker restart")
    finally:
        probe.disconnect()
        probe.loop_stop()


def test_backlog_built_during_a_broker_outage_is_delivered_after_it(mosquitto, tmp_path):
    collector = Collector(mosquitto.url)
    sent = _readings("cgm-8", 400)
    outbox = FileOutbox(tmp_path / "outbox")
    uplink = Uplink(mosquitto.url, "cgm-8", outbox, reconnect_max_s=0.5)
    try:
        received = lambda: {i for i in collector.ids() if "/cgm-8/" in i[0]}  # noqa: E731
        outbox.put_many(sent[:100])
        assert uplink.drain(10)
        # Acknowledged by the broker is not yet delivered to the collector: what Mosquitto
        # still holds for it when stopped is gone (no persistence), so wait for delivery.
        assert wait_until(lambda: received() == _ids(sent[:100]), 20)
        mosquitto.stop()
        outbox.put_many(sent[100:])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            uplink.service(timeout_s=0.02)
        assert not uplink.connected and len(outbox) == 300
        mosquitto.start()
        _wait_until_subscribed_again(mosquitto.url, collector)
        assert uplink.drain(20)
        assert uplink.counters.connects >= 2
        assert wait_until(lambda: received() == _ids(sent), 20), sorted(_ids(sent) - received())[:5]
    finally:
        uplink.close()
        outbox.close()
        collector.close()


def test_simulated_run_with_offline_periods_duplicates_and_reordering_delivers_every_message(mosquitto, tmp_path):
    start = NOW - 8 * 3600.0
    config = CohortConfig()
    expected = merged_messages(simulate_cohort(OneCompartmentVancomycin(), 2, start, 6 * 3600.0, 5, config))
    collector = Collector(mosquitto.url)
    try:
        summary = run_simulation(
            OneCompartmentVancomycin(), 2, 0.0, mosquitto.url, "offline=0.4,duplicate=0.05,reorder=0.05", seed=5,
            duration_h=6.0, progress=False, start_t=start, config=config, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl",
        )
        assert summary.left_in_outbox == 0
        assert summary.reconnects >= 1  # the offline periods did cut the uplink
        assert summary.acked == summary.messages > len(expected)  # duplicates were sent too
        want = _ids([(m.topic, m.payload) for m in expected])
        assert wait_until(lambda: set(collector.ids()) == want, 10), len(want - set(collector.ids()))
    finally:
        collector.close()


def test_simulated_run_reaches_the_embedded_demo_broker(embedded_broker, tmp_path):
    """The embedded amqtt broker speaks MQTT 3.1.1 only: the simulator's default protocol."""
    start = NOW - 5 * 3600.0
    expected = merged_messages(simulate_cohort(OneCompartmentVancomycin(), 1, start, 4 * 3600.0, 2, CohortConfig()))
    collector = Collector(embedded_broker.url)
    try:
        summary = run_simulation(OneCompartmentVancomycin(), 1, 0.0, embedded_broker.url, "duplicate=0.05", seed=2,
                                 duration_h=4.0, progress=False, start_t=start, outbox_path=tmp_path / "outbox", ground_truth_path=tmp_path / "truth.jsonl")
        assert summary.acked == summary.messages and summary.left_in_outbox == 0
        want = _ids([(m.topic, m.payload) for m in expected])
        assert wait_until(lambda: set(collector.ids()) == want, 15), len(want - set(collector.ids()))
    finally:
        collector.close()
