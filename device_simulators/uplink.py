"""A device's connection to the broker, publishing from its outbox and counting PUBACKs.

One thread does everything (publish, network I/O, callbacks, outbox bookkeeping): paho's
network loop is driven by `service()` instead of paho's own thread, so callbacks cannot
race the outbox and an exception in one surfaces in the caller instead of silently
killing a background thread. Callbacks only record what happened.

Every connection gets a fresh paho client: message ids (`mid`) restart per connection, so
the mid -> outbox row map is per connection, and after a reconnect the outbox (not
paho's memory) decides what is sent again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import paho.mqtt.client as paho

from device_simulators.mqtt_client import MqttProtocol, new_client, parse_broker_url
from device_simulators.outbox import Outbox


@dataclass
class UplinkCounters:
    published: int = 0
    """PUBLISH packets handed to paho (resends included)."""
    acked: int = 0
    """Messages the broker acknowledged (PUBACK) and that left the outbox."""
    rejected: int = 0
    """PUBACKs with a failure reason code (MQTT 5 only): dropped, a retry would fail again."""
    connects: int = 0
    disconnects: int = 0


class Uplink:
    def __init__(
        self,
        broker_url: str,
        client_id: str,
        outbox: Outbox,
        *,
        protocol: MqttProtocol = "3.1.1",
        window: int = 20_000,
        keepalive_s: int = 30,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 2.0,
    ):
        self.broker = parse_broker_url(broker_url)
        self.client_id = client_id
        self.outbox = outbox
        self.protocol = protocol
        self.window = window
        """Most messages in flight (published, not yet acknowledged) at once."""
        self.keepalive_s = keepalive_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.counters = UplinkCounters()
        self.online = True
        """False while the device is simulated offline: it keeps queueing, sends nothing."""
        self._client: paho.Client | None = None
        self._connected = False
        self._lost = False
        self._in_flight: dict[int, int] = {}  # mid -> outbox row id, this connection only
        self._acks: list[tuple[int, bool]] = []  # (mid, success) from on_publish
        self._next_attempt = 0.0
        self._backoff = reconnect_min_s
        self._downlink: list[str] = []  # topics subscribed on every connection
        self.received: list[tuple[str, bytes]] = []
        """Downlink messages (topic, payload) not yet taken by the caller; see `take_received`."""

    @property
    def connected(self) -> bool:
        return self._connected

    def service(self, timeout_s: float = 0.0) -> int:
        """One round: (re)connect when due, publish up to the window, do network I/O,
        retire acknowledged messages. Waits at most `timeout_s` for network events.
        Returns the number of messages acknowledged in this round."""
        if not self.online:
            self._drop_connection()
            if timeout_s:
                time.sleep(timeout_s)
            return 0
        if self._client is None and not self._try_connect():
            if timeout_s:
                time.sleep(min(timeout_s, max(0.0, self._next_attempt - time.monotonic())))
            return 0
        self._publish_window()
        if self._client is not None:
            rc = self._client.loop(timeout=timeout_s)
            if rc != paho.MQTT_ERR_SUCCESS or self._lost:
                self._drop_connection()
        return self._retire_acks()

    def listen(self, topics: list[str]) -> None:
        """Subscribe (QoS 1) to these downlink topics on this and every later connection; what
        arrives (retained messages included) collects in `received`."""
        self._downlink += topics
        if self._client is not None:
            self._subscribe(self._client, topics)

    def take_received(self) -> list[tuple[str, bytes]]:
        taken, self.received = self.received, []
        return taken

    def drain(self, timeout_s: float) -> bool:
        """Service until the outbox is empty or `timeout_s` (wall) passed; True when empty."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox) and time.monotonic() < deadline:
            self.service(timeout_s=0.01)
        return len(self.outbox) == 0

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.1)
            except Exception:  # closing anyway
                pass
        self._drop_connection()

    # -- connection ------------------------------------------------------------------

    def _try_connect(self, timeout_s: float = 5.0) -> bool:
        now = time.monotonic()
        if now < self._next_attempt:
            return False
        client = new_client(self.broker, self.client_id, self.protocol)
        outcome: list[bool] = []
        client.on_connect = lambda c, u, flags, reason, props: outcome.append(not reason.is_failure)
        client.on_disconnect = lambda c, u, flags, reason, props: self._mark_lost()
        client.on_publish = lambda c, u, mid, reason, props: self._acks.append((mid, not reason.is_failure))
        client.on_message = lambda c, u, message: self.received.append((message.topic, message.payload))
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=self.keepalive_s)
            deadline = now + timeout_s
            while not outcome and not self._lost and time.monotonic() < deadline:
                if client.loop(timeout=0.05) != paho.MQTT_ERR_SUCCESS:
                    break
        except OSError:
            pass
        if not (outcome and outcome[0]):
            self._lost = False
            _quietly_disconnect(client)
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.reconnect_max_s)
            return False
        self._client, self._connected, self._lost = client, True, False
        self._backoff = self.reconnect_min_s
        self.counters.connects += 1
        self._subscribe(client, self._downlink)
        # everything not acknowledged goes again, oldest first
        self.outbox.rewind()
        return True

    @staticmethod
    def _subscribe(client: paho.Client, topics: list[str]) -> None:
        for start in range(0, len(topics), 100):  # a bounded SUBSCRIBE packet per 100 topics
            client.subscribe([(topic, 1) for topic in topics[start : start + 100]])

    def _mark_lost(self) -> None:
        self._lost = True

    def _drop_connection(self) -> None:
        if self._client is None:
            return
        _quietly_disconnect(self._client)
        self._client, self._connected, self._lost = None, False, False
        self._in_flight.clear()
        self._acks.clear()  # their mids belong to the dead connection
        self.counters.disconnects += 1
        self._next_attempt = time.monotonic() + self._backoff

    # -- publishing ------------------------------------------------------------------

    def _publish_window(self) -> None:
        client = self._client
        room = self.window - len(self._in_flight)
        if client is None or room <= 0:
            return
        for row_id, topic, payload in self.outbox.next_unsent(room):
            # the contract's status topic is retained: a late subscriber learns the state at once
            info = client.publish(topic, payload, qos=1, retain=topic.endswith("/status"))
            if info.rc != paho.MQTT_ERR_SUCCESS:
                # the connection broke under us (or paho refused): start over on a new one
                self._lost = True
                return
            self._in_flight[info.mid] = row_id
            self.counters.published += 1

    def _retire_acks(self) -> int:
        if not self._acks:
            return 0
        acks, self._acks = self._acks, []
        done = []
        for mid, success in acks:
            row_id = self._in_flight.pop(mid, None)
            if row_id is None:
                continue
            done.append(row_id)
            if success:
                self.counters.acked += 1
            else:
                self.counters.rejected += 1
        self.outbox.ack_many(done)
        return len(done)


def _quietly_disconnect(client: paho.Client) -> None:
    try:
        client.disconnect()
    except Exception:  # the socket may already be gone; the client is dropped either way
        pass
