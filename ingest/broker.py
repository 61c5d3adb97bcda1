"""The embedded MQTT broker: amqtt running on its own event loop in a background thread.

It is the zero-setup default, so that `make demo` works with no server installed. It
speaks MQTT 3.1.1 only and keeps sessions in memory, and amqtt 0.12.1 does not redeliver
messages a resumed persistent session had left unacknowledged (a probe waited 6 s): the
no-loss promise needs a real broker. Production uses Mosquitto (or any MQTT 5 broker),
configured by `MIPD_BROKER_URL`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker: broker.url` -> "mqtt://127.0.0.1:PORT"."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        # amqtt logs every packet at INFO; the service's log is for the service
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("embedded MQTT broker did not start")
        if self._error is not None:
            raise RuntimeError(f"embedded MQTT broker failed: {self._error}") from self._error
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        # amqtt refuses an MQTT 5 CONNECT by dropping the socket, which asyncio reports as an
        # unhandled error; a client probing for MQTT 5 is normal, not an error.
        self._loop.set_exception_handler(
            lambda loop, context: logging.getLogger(__name__).debug("broker: %s", context.get("message"))
        )
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as err:  # reported to start()
            self._error = err
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            future.result(timeout=10)
        except Exception:  # shutting down anyway
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
