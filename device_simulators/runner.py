"""`run_simulation`: a virtual cohort's devices publishing over MQTT, in real or accelerated time.

The run precomputes every message (the truth does not depend on what ingest answers),
then releases each at its simulated send time into the outbox, and the uplink publishes
from the outbox. With `speed=0` it is a load generator: simulated time jumps ahead as
fast as PUBACKs come back, with at most `window` messages in flight.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device_simulators.clock import SimClock
from device_simulators.cohort import CohortConfig, SimulatedPatient, merged_messages, simulate_cohort, write_ground_truth
from device_simulators.faults import Faults, apply_message_faults, offline_windows
from device_simulators.malformed import malformed_cases
from device_simulators.message import Message
from device_simulators.mqtt_client import MqttProtocol
from device_simulators.outbox import FileOutbox, MemoryOutbox, Outbox
from device_simulators.packing import pack_uploads
from device_simulators.truth import TruthModel
from device_simulators.truth_models import truth_model
from device_simulators.uplink import Uplink
from wire.messages import SampleRequest
from wire.topics import TopicKind, device_topic, parse_topic

MEMORY = "memory"
"""`outbox_path=MEMORY`: keep the outbox in memory (load generation; not crash-safe)."""


@dataclass
class RunSummary:
    patients: int
    devices: int
    messages: int
    """MQTT messages the devices sent, faults (duplicates, malformed) and answers included."""
    records: int
    """Readings and dose events in those messages (a pack holds several)."""
    acked: int
    """Messages acknowledged by the broker (PUBACK)."""
    published: int
    """PUBLISH packets sent, resends after reconnects included."""
    left_in_outbox: int
    """Messages not acknowledged when the run ended (0 unless the drain timed out)."""
    reconnects: int
    wall_s: float
    sim_start: float
    sim_end: float
    ground_truth: Path | None
    answered: int = 0
    """Messages of samples taken because the service asked (`follow_requests`)."""

    @property
    def acked_per_s(self) -> float:
        return self.acked / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def records_per_s(self) -> float:
        """Records carried per wall second (exact when everything was acknowledged)."""
        return self.records / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        fields["ground_truth"] = str(self.ground_truth) if self.ground_truth else None
        fields["acked_per_s"] = self.acked_per_s
        fields["records_per_s"] = self.records_per_s
        return fields

    def describe(self) -> str:
        return (
            f"{self.patients} patients, {self.devices} devices: {self.acked}/{self.messages} messages acknowledged "
            f"in {self.wall_s:.1f} s ({self.acked_per_s:,.0f} msg/s; {self.records:,} records, "
            f"{self.records_per_s:,.0f} records/s), {self.published} publishes, "
            f"{self.reconnects} reconnects, {self.left_in_outbox} left in outbox"
            + (f"; ground truth in {self.ground_truth}" if self.ground_truth else "")
        )


def run_simulation(
    model: TruthModel | str,
    patients: int,
    speed: float,
    broker_url: str,
    faults: Faults | str | None = None,
    seed: int = 0,
    duration_h: float = 24.0,
    progress: bool = True,
    *,
    start_t: float | None = None,
    config: CohortConfig | None = None,
    ground_truth_path: Path | None = None,
    outbox_path: Path | str | None = None,
    client_id: str | None = None,
    protocol: MqttProtocol = "3.1.1",
    window: int = 20_000,
    drain_timeout_s: float = 60.0,
    stop: threading.Event | None = None,
    upload_every_s: float = 0.0,
    connect_timeout_s: float = 15.0,
    on_cohort: Callable[[list[SimulatedPatient]], None] | None = None,
    follow_requests: bool = False,
) -> RunSummary:
    """Simulate `patients` patients of `model` for `duration_h` simulated hours and publish.

    speed: simulated seconds per wall second (1 real time, 0 as fast as possible).
    start_t: simulated start, s since epoch; by default chosen so no `t` is in the future.
    outbox_path: directory of the on-disk outbox (default: a fresh temporary one), or MEMORY.
    ground_truth_path: where the JSON-lines ground truth goes (default: next to the outbox).
    stop: set it to end the run early (the outbox is still drained).
    upload_every_s: devices upload their records in packs, one per this many simulated
        seconds (0: every record as its own message).
    connect_timeout_s: a broker not reachable at the start within this is a ConnectionError
        (later outages are ridden out through the outbox).
    on_cohort: called with the simulated patients before anything is published (e.g. to
        enroll their devices and configure them in the service under test).
    follow_requests: the drug-level meters also sample when the service asks (a `SampleRequest`
        on their schedule topic), besides their schedule; needs `speed` > 0, since the answer
        depends on when the request arrives.
    """
    if follow_requests and speed <= 0:
        raise ValueError("follow_requests needs speed > 0 (simulated time must follow the wall clock)")
    model = truth_model(model) if isinstance(model, str) else model
    faults = faults if isinstance(faults, Faults) else Faults.parse(faults)
    config = config or CohortConfig()
    if faults.skew or faults.drift:
        config = _with_clock_faults(config, faults)
    duration_s = duration_h * 3600.0
    start = start_t if start_t is not None else SimClock.for_run(duration_s, speed).start
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31]))

    cohort = simulate_cohort(model, patients, start, duration_s, seed, config)
    if on_cohort is not None:
        on_cohort(cohort)
    workdir = Path(tempfile.mkdtemp(prefix="mipd-sim-")) if not (ground_truth_path and outbox_path) else None
    truth_path = write_ground_truth(cohort, ground_truth_path or workdir / "ground_truth.jsonl")
    # the clock starts now, after the (possibly slow) cohort simulation
    clock = SimClock(start, speed)
    messages = apply_message_faults(pack_uploads(merged_messages(cohort), upload_every_s), faults, rng)
    if faults.malformed and cohort:
        first_device = next(iter(cohort[0].devices.values()))
        bad = [Message(clock.start, c.topic, c.payload) for c in malformed_cases(first_device, time.time())]
        messages = bad + messages
    offline = offline_windows(clock.start, clock.start + duration_s, faults, rng)

    outbox = _open_outbox(outbox_path, workdir)
    uplink = Uplink(broker_url, client_id or f"mipd-sim-{seed}-{os.getpid()}", outbox, protocol=protocol, window=window)
    answer = _request_answerer(cohort, uplink, clock) if follow_requests else None
    started = time.monotonic()
    try:
        _first_connection(uplink, broker_url, connect_timeout_s)
        answered = _release_loop(messages, clock, uplink, offline, progress, stop, answer, clock.start + duration_s)
        uplink.online = True
        uplink.drain(drain_timeout_s)
    finally:
        uplink.close()
        left = len(outbox)
        outbox.close()
    return RunSummary(
        patients=patients,
        devices=sum(len(p.devices) for p in cohort),
        messages=len(messages) + len(answered),
        records=sum(m.elements for m in messages + answered),
        answered=len(answered),
        acked=uplink.counters.acked,
        published=uplink.counters.published,
        left_in_outbox=left,
        reconnects=max(0, uplink.counters.connects - 1),
        wall_s=time.monotonic() - started,
        sim_start=clock.start,
        sim_end=clock.start + duration_s,
        ground_truth=truth_path,
    )


def _first_connection(uplink: Uplink, broker_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not uplink.connected:
        if time.monotonic() > deadline:
            raise ConnectionError(f"could not connect to the MQTT broker at {broker_url}")
        uplink.service(timeout_s=0.05)


def _with_clock_faults(config: CohortConfig, faults: Faults) -> CohortConfig:
    return replace(config, clock_offset_sd_s=faults.skew, clock_drift_ppm_sd=faults.drift)


def _open_outbox(outbox_path: Path | str | None, workdir: Path | None) -> Outbox:
    if outbox_path == MEMORY:
        return MemoryOutbox()
    return FileOutbox(Path(outbox_path) if outbox_path else workdir / "outbox")


def _request_answerer(cohort: list[SimulatedPatient], uplink: Uplink, clock: SimClock) -> Callable[[], list[Message]]:
    """Listen on each drug-level meter's schedule topic; the returned function turns the
    requests received since its last call into the messages of the samples they cause."""
    meters = {p.meter_on_request.device_id: p.meter_on_request for p in cohort if p.meter_on_request is not None}
    uplink.listen([device_topic(device_id, TopicKind.SCHEDULE) for device_id in sorted(meters)])

    def answer() -> list[Message]:
        out = []
        for topic, payload in uplink.take_received():
            where = parse_topic(topic)
            meter = meters.get(where.device_id) if where is not None else None
            try:
                request = SampleRequest.model_validate_json(payload)
            except ValueError:
                continue  # not a request this meter understands: a real one would show an error
            if meter is not None:
                out += meter.respond(request, clock.now())
        return out

    return answer


def _release_loop(
    messages: list[Message],
    clock: SimClock,
    uplink: Uplink,
    offline: list[tuple[float, float]],
    progress: bool,
    stop: threading.Event | None,
    answer: Callable[[], list[Message]] | None = None,
    end_t: float = float("inf"),
) -> list[Message]:
    """Put each message into the outbox at its simulated send time, servicing the uplink meanwhile.

    ``answer`` (throttled runs only) yields messages caused by what the devices received, e.g.
    samples the service asked for; they are released at their own send times, until ``end_t``.
    Returns those caused messages."""
    send_times = [m.sim_t for m in messages]
    offline_starts = [w[0] for w in offline]
    boundaries = sorted(t for w in offline for t in w)
    batch = max(1, uplink.window // 2)
    released = 0
    caused: list[tuple[float, int, Message]] = []  # heap of (send time, arrival order, message)
    order, sent = itertools.count(), []
    listening = lambda: answer is not None and clock.now() < end_t
    with tqdm(total=len(messages), unit="msg", disable=not progress, smoothing=0.1) as bar:
        while (released < len(messages) or caused or listening()) and not (stop is not None and stop.is_set()):
            if answer is not None:
                for message in answer():
                    heapq.heappush(caused, (message.sim_t, next(order), message))
                while caused and (caused[0][0] <= clock.now() or caused[0][0] >= end_t):
                    _, _, message = heapq.heappop(caused)
                    if message.sim_t < end_t:
                        uplink.outbox.put_many([(message.topic, message.payload)])
                        sent.append(message)
                        bar.total += 1
            if clock.unthrottled:
                # keep the outbox about one window ahead of what is in flight; while offline
                # nothing drains, so time runs on and the backlog grows, as on a real device
                room = len(uplink.outbox) < uplink.window or not uplink.online
                due = released + batch if room else released
                due = min(due, len(messages), _next_boundary_index(send_times, released, boundaries))
                if due > released:
                    clock.advance_to(send_times[due - 1])
            else:
                due = bisect.bisect_right(send_times, clock.now(), lo=released)
            if due > released:
                uplink.outbox.put_many((m.topic, m.payload) for m in messages[released:due])
                released = due
            uplink.online = not _in_window(clock.now(), offline, offline_starts)
            wait = 0.0 if clock.unthrottled else min(0.05, clock.wall_seconds_until(send_times[released]) if released < len(messages) else 0.05)
            if not clock.unthrottled and released == len(messages) and caused:
                wait = min(0.05, max(0.0, clock.wall_seconds_until(caused[0][0])))
            bar.update(uplink.service(timeout_s=wait))
        # the rest of the acknowledgements arrive while draining; count them on the bar too
        while len(uplink.outbox) and not (stop is not None and stop.is_set()) and uplink.connected:
            bar.update(uplink.service(timeout_s=0.01))
    return sent


def _next_boundary_index(send_times: list[float], released: int, boundaries: list[float]) -> int:
    """Index of the first message at or after the next offline-window start or end, so that an
    unthrottled run releases no batch across a change of the uplink's state."""
    i = bisect.bisect_right(boundaries, send_times[released])
    if i == len(boundaries):
        return len(send_times)
    return max(released + 1, bisect.bisect_left(send_times, boundaries[i], lo=released))


def _in_window(t: float, windows: list[tuple[float, float]], starts: list[float]) -> bool:
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and t < windows[i][1]
