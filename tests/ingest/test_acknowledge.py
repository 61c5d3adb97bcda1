"""`ingest.mqtt.acknowledge`: a batch's PUBACKs as paho's `ack()` builds them, in one packet."""

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import acknowledge

MIDS = [1, 2, 300, 65535]


def _client() -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, manual_ack=True)
    client.on_socket_register_write = lambda *args: None  # queue only: no loop, no socket
    return client


def _queued(client: paho.Client) -> list[bytes]:
    # paho's write queue: the internal this module relies on, checked here against paho itself.
    return [bytes(packet["packet"]) for packet in client._out_packet]


def test_one_packet_holds_exactly_the_bytes_of_an_ack_per_message():
    reference = _client()
    for mid in MIDS:
        reference.ack(mid, 1)
    ours = _client()
    acknowledge(ours, MIDS)
    assert len(_queued(reference)) == len(MIDS)
    assert _queued(ours) == [b"".join(_queued(reference))]


def test_nothing_is_queued_for_no_messages():
    client = _client()
    acknowledge(client, [])
    assert _queued(client) == []


class _ClientWithoutPacketQueue:
    """A paho without the internal `_packet_queue`: only the public `ack()`."""

    def __init__(self):
        self.acked: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append((mid, qos))


def test_without_the_internal_each_message_is_acknowledged_with_ack():
    client = _ClientWithoutPacketQueue()
    acknowledge(client, MIDS)
    assert client.acked == [(mid, 1) for mid in MIDS]
