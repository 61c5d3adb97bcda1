"""Connecting paho-mqtt 2.x the one way this project does it.

- VERSION2 callbacks (VERSION1 is deprecated and a wrong signature kills the loop thread);
- MQTT 5 where the broker speaks it, 3.1.1 otherwise (`protocol="auto"` tries 5 first);
- subscriptions made in `on_connect`, so that they come back after every reconnect;
- a persistent session (clean_start False + session expiry, or clean_session False), so
  that what was not acknowledged is redelivered after a crash.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
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
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id


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


def _try_connect(
    address: BrokerAddress, client: paho.Client, mqtt5: bool, persistent: bool, timeout: float, own_loop: bool
) -> SelectLoop | bool | None:
    """Connect synchronously; once the broker accepted (CONNACK success), the running
    `SelectLoop` (`own_loop`) or True (paho's loop thread); None on failure."""
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
    network = SelectLoop(client) if own_loop else None
    try:
        client.connect(address.host, address.port, keepalive=30, **kwargs)
    except OSError:
        if network is not None:
            network.stop()  # never started: closes its wake-up sockets
        return None
    if network is not None:
        network.start()
    else:
        client.loop_start()
    accepted.wait(timeout)
    if not (result and result[0]):
        try:
            if network is not None:
                network.disconnect()
            else:
                client.loop_stop()
                client.disconnect()
        except Exception:
            pass
        return None
    return network or True


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
    client, mqtt5, _ = _connect(url, client_id, own_loop=False, protocol=protocol, manual_ack=manual_ack,
                                persistent=persistent, subscriptions=subscriptions, on_message=on_message, will=will,
                                timeout=timeout)
    return client, mqtt5


def connect_with_select_loop(url: str, client_id: str, **options) -> tuple[paho.Client, bool, SelectLoop]:
    """As `connect` (same keyword options), with the network loop in a `SelectLoop`: for a
    high-rate subscriber that acknowledges from another thread. End it with
    `SelectLoop.disconnect()`."""
    client, mqtt5, network = _connect(url, client_id, own_loop=True, **options)
    assert isinstance(network, SelectLoop)
    return client, mqtt5, network


def _connect(url, client_id, *, own_loop, protocol="auto", manual_ack=False, persistent=False, subscriptions=(),
             on_message=None, will=None, timeout=10.0):
    address = BrokerAddress.parse(url)
    attempts = {"auto": [True, False], "5": [True], "3.1.1": [False]}[protocol]
    for mqtt5 in attempts:
        client = new_client(address, client_id, mqtt5, manual_ack=manual_ack, persistent=persistent)
        if will is not None:
            client.will_set(*will)
        if on_message is not None:
            client.on_message = on_message
        network = _try_connect(address, client, mqtt5, persistent, timeout, own_loop)
        if network:
            filters = list(subscriptions(mqtt5) if callable(subscriptions) else subscriptions)
            _renew_subscriptions_on_connect(client, filters)
            _subscribe_and_wait(client, filters, timeout)
            return client, mqtt5, network
    raise ConnectionError(f"could not connect to the MQTT broker at {url} (protocol {protocol})")


class SelectLoop:
    """A client's network loop in a thread of ours, through paho's external-loop API
    (`loop_read`, `loop_write`, `loop_misc`, `on_socket_register_write`).

    Why not `loop_start()`: there, every packet queued from another thread (each manual
    `ack()`) writes a wake-up byte to a socket pair, one system call per acknowledgement,
    and the loop thread calls `select()` again before every packet it reads. Here paho asks
    for a wake-up only when its write queue turns non-empty (it coalesces
    `on_socket_register_write`), and reads go on while they deliver messages, with a
    `select()` only when the socket has run dry. Reconnects with backoff like `loop_forever`
    (the subscriptions are renewed by `on_connect`, as for every client here).
    """

    MISC_INTERVAL_S = 1.0
    READS_PER_SELECT = 256

    def __init__(self, client: paho.Client, reconnect_delay_s: tuple[float, float] = (0.5, 30.0)):
        self.client = client
        self.reconnect_delay_s = reconnect_delay_s
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt-select-loop", daemon=True)
        self._delivered = 0
        client.on_socket_register_write = lambda c, userdata, sock: self._wake()

    def start(self) -> SelectLoop:
        on_message = self.client.on_message

        def counted(c, userdata, message):
            self._delivered += 1
            on_message(c, userdata, message)

        if on_message is not None:
            self.client.on_message = counted
        self._thread.start()
        return self

    def disconnect(self) -> None:
        """Send DISCONNECT and end the loop (unacknowledged messages stay with the broker)."""
        self._stopping.set()
        self.client.disconnect()
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a byte is already waiting, or the loop has ended

    def _run(self) -> None:
        client, delay = self.client, self.reconnect_delay_s[0]
        next_misc = time.monotonic() + self.MISC_INTERVAL_S
        while True:
            sock = client.socket()
            if sock is None:
                if self._stopping.is_set():
                    return
                if self._stopping.wait(delay):
                    return
                delay = min(2 * delay, self.reconnect_delay_s[1])
                try:
                    client.reconnect()
                except OSError:
                    continue
                delay = self.reconnect_delay_s[0]
                continue
            if self._stopping.is_set() and not client.want_write():
                return
            pending = _pending(sock)
            try:
                readable, writable, _ = select.select(
                    [sock, self._wake_r], [sock] if client.want_write() else [], [], 0.0 if pending else 1.0
                )
            except (OSError, ValueError):  # the socket was closed under us: paho notices on the next read
                readable, writable = [sock], []
            if pending and sock not in readable:  # read them now: the kernel may have nothing more to say
                readable.append(sock)
            if self._wake_r in readable:
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
            if sock in readable and not self._read(client):
                continue
            if (sock in writable or client.want_write()) and client.loop_write() != paho.MQTT_ERR_SUCCESS:
                continue
            if time.monotonic() >= next_misc:
                client.loop_misc()
                next_misc = time.monotonic() + self.MISC_INTERVAL_S

    def _read(self, client: paho.Client) -> bool:
        """Read packets while they deliver messages; False when the connection was lost."""
        for _ in range(self.READS_PER_SELECT):
            before = self._delivered
            if client.loop_read() != paho.MQTT_ERR_SUCCESS or client.socket() is None:
                return False
            if self._delivered == before:
                break
        return True


def acknowledge(client: paho.Client, mids: Sequence[int]) -> None:
    """PUBACK the QoS 1 messages `mids` of a `manual_ack` client, in one socket write.

    paho's `ack()` queues one 4-byte packet per message, and its network loop sends each
    with a system call of its own (4 us of CPU each here, and as many reads for the broker).
    These are the bytes `ack()` builds (MQTT 3.1.1 §3.4; MQTT 5 §3.4.2.1: a Success PUBACK
    may omit its reason code), queued as one entry through paho's internal `_packet_queue`;
    a paho without it acknowledges each message with `ack()`.
    """
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None:
        for mid in mids:
            client.ack(mid, 1)
    elif mids:
        queue_packet(paho.PUBACK, b"".join(_PUBACK.pack(paho.PUBACK, 2, mid) for mid in mids), 0, 1)


def _pending(sock) -> bool:
    """Bytes already decrypted by TLS and waiting in the SSL object (select cannot see them)."""
    return bool(getattr(sock, "pending", None) and sock.pending() > 0)


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
