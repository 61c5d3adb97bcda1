"""Making a paho-mqtt 2.x client the way every simulator connection needs it.

The broker URL form is mipdstream's (`mqtt://user:pass@host:1883`, `mqtts://host:8883`);
`ingest.mqtt.BrokerAddress` parses the same form, and the simulators may not import ingest,
so this is the minimal local reading of it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple
from urllib.parse import unquote, urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

MqttProtocol = Literal["3.1.1", "5"]


class Broker(NamedTuple):
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool


def parse_broker_url(url: str) -> Broker:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    tls = parsed.scheme == "mqtts"
    return Broker(
        parsed.hostname or "localhost", parsed.port or (8883 if tls else 1883),
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None, tls,
    )


def new_client(broker: Broker, client_id: str, protocol: MqttProtocol = "3.1.1") -> paho.Client:
    """A client with no limits of its own on in-flight or queued messages.

    MQTT 3.1.1 by default: every broker speaks it (the embedded amqtt refuses MQTT 5),
    and nothing a device publishes needs MQTT 5. The session is clean: what matters
    to a publisher is its own outbox, which outlives any session.
    """
    mqtt5 = protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
        clean_session=None if mqtt5 else True,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set()
    # the caller bounds what is in flight itself; paho's default of 20 would cap throughput
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    return client
