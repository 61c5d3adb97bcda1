"""`mipd conformance`: watch a device's real traffic and judge each message against the wire contract.

The watcher subscribes to everything under `mipd/v1/dev/{device_id}/` (so a message on a
misspelt topic such as `.../readings` is seen and failed as `bad_topic`), except the error
topic, which is ingest's to publish. Each message is judged by `verdict.check_message`, i.e.
by the validators ingest itself uses (`wire.messages`); it is stamped on arrival, as ingest
stamps it, so `time_in_future` is judged against the same clock. Retained status messages
the broker hands over on subscribing are judged too.

Only the stateless contract is checked: whether the device is registered and enrolled
(`unknown_device`, `not_enrolled`) is a question for the deployment's registry.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from device_simulators.mqtt_client import MqttProtocol, new_client, parse_broker_url
from device_simulators.verdict import Verdict, check_message
from wire.topics import TOPIC_ROOT, TopicKind, device_topic, valid_device_id


@dataclass
class ConformanceReport:
    device_id: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(v.ok for v in self.verdicts)

    @property
    def failed(self) -> int:
        return len(self.verdicts) - self.passed

    def reasons(self) -> Counter:
        return Counter(p.reason.value for v in self.verdicts for p in v.problems)

    @property
    def exit_code(self) -> int:
        """0: every message passed (and there was one); 1: some failed; 2: none was seen."""
        if not self.verdicts:
            return 2
        return 0 if self.failed == 0 else 1

    def summary(self) -> str:
        if not self.verdicts:
            return f"device {self.device_id}: no messages seen"
        line = f"device {self.device_id}: {len(self.verdicts)} messages, {self.passed} passed, {self.failed} failed"
        reasons = self.reasons()
        if reasons:
            line += " (" + ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common()) + ")"
        return line


class _Received:
    """What paho's network thread hands over; the judging happens in the caller's thread."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[str, bytes, float, bool]] = queue.Queue()
        self.subscribed = queue.Queue()

    def on_message(self, client, userdata, message) -> None:
        self.messages.put((message.topic, message.payload, time.time(), bool(message.retain)))


def watch(
    broker_url: str,
    device_id: str,
    *,
    timeout_s: float | None = None,
    max_messages: int | None = None,
    on_verdict: Callable[[Verdict], None] | None = None,
    protocol: MqttProtocol = "3.1.1",
    ready: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ConformanceReport:
    """Judge `device_id`'s messages until `max_messages` were seen, `timeout_s` passed (wall
    time since subscribing) or `should_stop()` is true. `ready` is called once subscribed."""
    if not valid_device_id(device_id):
        raise ValueError(f"invalid device id {device_id!r}")
    broker = parse_broker_url(broker_url)
    own_filter = f"{TOPIC_ROOT}/{device_id}/#"
    error_topic = device_topic(device_id, TopicKind.ERROR)
    received = _Received()
    client = new_client(broker, f"mipd-conformance-{device_id}-{int(time.time() * 1000) % 10**9}", protocol)
    client.on_message = received.on_message

    def on_connect(c, userdata, flags, reason, properties):
        if not reason.is_failure:  # subscribe here, so that a reconnect subscribes again
            c.subscribe(own_filter, qos=1)

    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, reasons, props: received.subscribed.put(mid)
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as err:
        raise ConnectionError(f"could not connect to the MQTT broker at {broker_url}: {err}") from err
    client.loop_start()
    report = ConformanceReport(device_id)
    try:
        try:
            received.subscribed.get(timeout=10)
        except queue.Empty:
            raise ConnectionError(f"could not subscribe to {own_filter} at {broker_url}") from None
        if ready is not None:
            ready()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while max_messages is None or len(report.verdicts) < max_messages:
                if should_stop is not None and should_stop():
                    break
                wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    topic, payload, received_at, retained = received.messages.get(timeout=wait)
                except queue.Empty:
                    continue
                if topic == error_topic:
                    continue
                verdict = check_message(topic, payload, received_at, retained)
                report.verdicts.append(verdict)
                if on_verdict is not None:
                    on_verdict(verdict)
        except KeyboardInterrupt:  # Ctrl-C ends the watch; the summary is still wanted
            pass
    finally:
        client.disconnect()
        client.loop_stop()
    return report

