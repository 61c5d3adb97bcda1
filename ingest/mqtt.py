"""Connecting paho-mqtt 2.x the one way this project does it.

- VERSION2 callbacks (VERSION1 is deprecated and a wrong signature kills the loop thread);
- MQTT 5 where the broker speaks it, 3.1.1 otherwise (`protocol="auto"` tries 5 first);
- subscriptions made in `on_connect`, so that they come back after every reconnect;
- a persistent session (clean_start False + session expiry, or clean_session False), so
  that what was not acknowledged is redelivered after a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

Protocol = Literal["auto", "5", "3.1.1"]
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://user:pass@host:1883` or `mqtts://host:8883`."""
        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        tls = parsed.scheme in ("mqtts", "ssl")
        return cls(
            host=parsed.hostname or "localhost",
            port=parsed.port or (8883 if tls else 1883),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=tls,
        )


def new_client(
    address: BrokerAddress,
    client_id: str,
    mqtt5: bool,
    *,
    manual_ack: bool = False,
    persistent: bool = False,
) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
        clean_session=None if mqtt5 else not persistent,
        manual_ack=manual_ack,
    )
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    # An unbounded in-flight window: with manual acks, the window is what is uncommitted.
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    return client


def connect_properties(persistent: bool) -> Properties | None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
    return props


def _try_connect(address: BrokerAddress, client: paho.Client, mqtt5: bool, persistent: bool, timeout: float) -> bool:
    """Connect synchronously; True once the broker accepted (CONNACK success)."""
    accepted = threading.Event()
    result: list[bool] = []

    def on_connect(c, userdata, flags, reason_code, properties):
        result.append(not reason_code.is_failure)
        accepted.set()

    def on_disconnect(c, userdata, flags, reason_code, properties):
        if not accepted.is_set():
            result.append(False)
            accepted.set()

    client.on_connect, client.on_disconnect = on_connect, on_disconnect
    kwargs = {"clean_start": not persistent, "properties": connect_properties(persistent)} if mqtt5 else {}
    try:
        client.connect(address.host, address.port, keepalive=30, **kwargs)
    except OSError:
        return False
    client.loop_start()
    accepted.wait(timeout)
    if not (result and result[0]):
        client.loop_stop()
        try:
            client.disconnect()
        except Exception:
            pass
        return False
    return True


def connect(
    url: str,
    client_id: str,
    *,
    protocol: Protocol = "auto",
    manual_ack: bool = False,
    persistent: bool = False,
    subscriptions: Sequence[tuple[str, int]] | Callable[[bool], Sequence[tuple[str, int]]] = (),
    on_message: Callable[[paho.Client, object, paho.MQTTMessage], None] | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
    timeout: float = 10.0,
) -> tuple[paho.Client, bool]:
    """A started, connected client and whether it speaks MQTT 5.

    `subscriptions` are (topic filter, QoS) pairs renewed on every (re)connect, or a function
    of "is it MQTT 5?" giving them (a shared subscription needs MQTT 5). The network loop
    runs in paho's thread; `on_message` must only hand the message over.
    """
    address = BrokerAddress.parse(url)
    attempts = {"auto": [True, False], "5": [True], "3.1.1": [False]}[protocol]
    for mqtt5 in attempts:
        client = new_client(address, client_id, mqtt5, manual_ack=manual_ack, persistent=persistent)
        if will is not None:
            client.will_set(*will)
        if on_message is not None:
            client.on_message = on_message
        if _try_connect(address, client, mqtt5, persistent, timeout):
            filters = list(subscriptions(mqtt5) if callable(subscriptions) else subscriptions)
            _renew_subscriptions_on_connect(client, filters)
            _subscribe_and_wait(client, filters, timeout)
            return client, mqtt5
    raise ConnectionError(f"could not connect to the MQTT broker at {url} (protocol {protocol})")


def _subscribe_and_wait(client: paho.Client, filters: Sequence[tuple[str, int]], timeout: float) -> None:
    """Subscribe and wait for the broker's SUBACKs, so that a message published after
    `connect` returns is delivered (a fresh session has nothing queued for us before)."""
    lock, acked, done = threading.Lock(), set(), threading.Event()
    pending: set[int] = set()

    def on_subscribe(c, userdata, mid, reason_codes, properties):
        with lock:
            acked.add(mid)
            if pending and pending <= acked:
                done.set()

    client.on_subscribe = on_subscribe
    with lock:
        pending.update(client.subscribe(topic_filter, qos)[1] for topic_filter, qos in filters)
        if not pending or pending <= acked:
            done.set()
    if not done.wait(timeout):
        raise ConnectionError(f"the broker did not acknowledge the subscriptions {list(filters)} within {timeout:g} s")
    client.on_subscribe = None


def _renew_subscriptions_on_connect(client: paho.Client, subscriptions: Sequence[tuple[str, int]]) -> None:
    def on_connect(c, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            for topic_filter, qos in subscriptions:
                c.subscribe(topic_filter, qos)

    client.on_connect = on_connect
    client.on_disconnect = None
