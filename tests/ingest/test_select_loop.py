"""`ingest.mqtt.SelectLoop` reads bytes that wait in user space, where select cannot see them."""

import socket
import threading

import paho.mqtt.client as paho

from ingest.mqtt import SelectLoop


class _TlsLikeSocket:
    """A socket whose next packet is already decrypted and held by the SSL object:
    `pending()` counts it, the kernel socket has nothing to read."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.held = 1

    def fileno(self) -> int:
        return self.sock.fileno()

    def pending(self) -> int:
        return self.held


class _Client:
    """The part of `paho.Client` that `SelectLoop` drives."""

    def __init__(self, sock: _TlsLikeSocket):
        self.sock = sock
        self.read_held_packet = threading.Event()
        self.on_message = None
        self.on_socket_register_write = None

    def socket(self):
        return self.sock

    def want_write(self) -> bool:
        return False

    def loop_read(self):
        if self.sock.held:
            self.sock.held = 0
            self.read_held_packet.set()
        return paho.MQTT_ERR_SUCCESS

    def loop_write(self):
        return paho.MQTT_ERR_SUCCESS

    def loop_misc(self):
        return paho.MQTT_ERR_SUCCESS


def test_pending_bytes_are_read_although_the_kernel_socket_is_silent():
    # A loop that only shortens its select() timeout for pending bytes reads nothing and spins
    # until the next TCP segment arrives (a keep-alive away at low rates).
    ours, theirs = socket.socketpair()
    client = _Client(_TlsLikeSocket(ours))
    loop = SelectLoop(client).start()
    try:
        assert client.read_held_packet.wait(2.0), "the held packet was not read"
    finally:
        loop.stop()
        ours.close()
        theirs.close()
