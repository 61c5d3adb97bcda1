"""A subscriber that records every device message a broker delivers, for the simulator tests."""

from __future__ import annotations

import json
import threading

from ingest.mqtt import connect


class Collector:
    """Records (topic, payload) of every message under `mipd/v1/dev/`; a persistent session, so
    that what is published while it reconnects (a broker restart) still reaches it."""

    def __init__(self, url: str, client_id: str = "test-collector", topic_filter: str = "mipd/v1/dev/#"):
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client, _ = connect(url, client_id, protocol="3.1.1", persistent=True,
                                 subscriptions=[(topic_filter, 1)], on_message=self._on_message)

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def ids(self) -> list[tuple[str, str]]:
        """(topic, id) of every reading or dose received, duplicates included."""
        with self._lock:
            received = list(self.messages)
        out = []
        for topic, payload in received:
            document = json.loads(payload)
            for element in document if isinstance(document, list) else [document]:
                if isinstance(element, dict) and "id" in element:  # a status has none
                    out.append((topic, element["id"]))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
