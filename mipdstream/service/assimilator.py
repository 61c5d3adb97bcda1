"""The worker that keeps every monitored patient's posterior current.

Committed readings and doses arrive from ingest (``submit`` is its commit listener) into a
bounded queue: when assimilation falls behind, ``submit`` blocks, ingest stops acknowledging,
and the broker holds the messages. The worker gathers events for ``batch_window_s``, lets
each patient's :class:`Timeline` decide what is due (reorder window, late events), and
assimilates the due patients of one model in one vmapped update. Then the policy evaluates
the patients that changed and their alerts go to the sinks (state DB, MQTT, dashboard).

Restart: each patient's posterior is checkpointed every ``checkpoint_interval_s``; on start
the worker restores it and replays the stored events after it (or everything, if a late
event landed before the checkpoint's time since). The posterior is a function of the sorted
events, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from assimilation import load_model
from assimilation.events import SensorChange
from assimilation.online import Posterior, from_bytes, init, rejuvenate, to_bytes, update
from ingest.records import Batch
from ingest.store import Store
from mipdstream.service.batching import split, stack
from mipdstream.service.events import SensorHistory, covariate_events, dose_event, has_sensor, reading_event, sensor_history
from mipdstream.service.metrics import ServiceMetrics
from mipdstream.service.state_db import AlertRecord, Checkpoint, PatientRecord, ServiceDB
from mipdstream.service.summaries import PosteriorSummary, summarise
from mipdstream.service.timeline import Snapshot, Timeline, TimelineEvent, Work

log = logging.getLogger(__name__)


class Evaluator(Protocol):
    """The dosing policy as the service sees it: alerts for one patient after an update.

    An evaluator may also have ``evaluate_batch(updates, now_s)``, called instead with every
    (patient, posterior, work) of one batched update, so that it can batch its own numerics
    (the policy checks all new readings in a few vmapped calls); it logs and skips a patient whose
    evaluation fails."""

    def __call__(self, patient: PatientRecord, posterior: Posterior, work: Work, now_s: float) -> list[AlertRecord]: ...


AlertSink = Callable[[list[AlertRecord]], None]
SummarySink = Callable[[list[PosteriorSummary]], None]


@dataclass(frozen=True)
class FilterSettings:
    method: str = "pf"
    n_particles: int = 1000
    seed: int = 0
    rejuvenate_after: int = 0  # resamplings of a patient between resample-move steps; 0 = never
    rejuvenate_moves: int = 3


@dataclass(frozen=True)
class Timing:
    reorder_window_s: float = 2.0
    batch_window_s: float = 0.2
    max_batch: int = 256
    checkpoint_interval_s: float = 30.0
    snapshot_every_h: float = 6.0
    queue_max: int = 10_000
    tick_s: float = 60.0  # how often the policy looks at the wall clock (silent sensors); 0: never


CHECKPOINT_CHUNK = 16  # patients per checkpoint transaction (a chunk stalls the other threads ~20 ms)


def patient_seed(seed: int, patient_id: str) -> int:
    """A patient's random stream depends on its id and the seed only (not on who else is batched)."""
    digest = hashlib.blake2b(f"{seed}:{patient_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class Assimilator:
    def __init__(
        self,
        db: ServiceDB,
        store: Store,
        filters: FilterSettings = FilterSettings(),
        timing: Timing = Timing(),
        evaluator: Evaluator | None = None,
        metrics: ServiceMetrics | None = None,
        owns: Callable[[str], bool] | None = None,
        name: str = "",
    ):
        """``owns(patient_id)``: whether this worker assimilates that patient (all by default)."""
        self.db, self.store, self.filters, self.timing = db, store, filters, timing
        self.owns = owns or (lambda patient_id: True)
        self.name = name
        self.evaluator = evaluator
        self.metrics = metrics or ServiceMetrics()
        self._sinks: list[AlertSink] = [db.add_alerts]
        self._summary_sinks: list[SummarySink] = []
        self._queue: queue.Queue[tuple[float, Batch]] = queue.Queue(maxsize=timing.queue_max)
        self._patients: dict[str, PatientRecord] = {}
        self._timelines: dict[str, Timeline] = {}
        self._dirty: set[str] = set()  # changed since the last checkpoint
        self._waiting: set[str] = set()  # have pending events
        self._reconfigured: set[str] = set()  # covariates changed: replay with the new prior
        self._counted: dict[str, int] = {}  # events per patient already in the assimilated metric
        self._moved_at: dict[str, int] = {}  # resample count at each patient's last resample-move
        self._sensors: dict[str, dict[int, set[str]]] = {}  # patient -> sensor analyte -> device ids seen
        self._sensor_keys: dict[str, set[str]] = {}  # patient -> sensor changes already on its timeline
        self._lock = threading.Lock()  # guards _timelines for readers (API)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None  # writes checkpoints (see checkpoint)
        self._ticker: threading.Thread | None = None  # the wall-clock tick (see _tick_forever)
        self._to_write = threading.Condition()
        self._unwritten: dict[str, object] = {}  # patient id -> its newest snapshot not yet written
        self._writer_closing = False
        self._last_checkpoint = time.monotonic()
        self.metrics.queue_depth.set_function(self._queue.qsize)

    # -- wiring -----------------------------------------------------------------------

    def add_sink(self, sink: AlertSink) -> None:
        self._sinks.append(sink)

    def add_summary_sink(self, sink: SummarySink) -> None:
        """Receives posterior quantiles of every analyte after each update."""
        self._summary_sinks.append(sink)

    def submit(self, batch: Batch, committed_at: float | None = None) -> None:
        """Ingest's commit listener. Blocks while the queue is full (backpressure)."""
        if batch.readings or batch.doses:
            while not self._stopping.is_set():
                try:
                    self._queue.put((time.monotonic(), batch), timeout=0.5)
                    return
                except queue.Full:
                    self.metrics.backpressure.inc()

    def posterior(self, patient_id: str) -> tuple[Posterior, float] | None:
        """The patient's current posterior and its time (model h), or None if not monitored."""
        with self._lock:
            timeline = self._timelines.get(patient_id)
            return None if timeline is None else (timeline.current.posterior, timeline.current.time)

    def monitored(self) -> list[str]:
        """Ids of the patients this worker keeps current."""
        with self._lock:
            return sorted(self._timelines)

    def patient(self, patient_id: str) -> PatientRecord | None:
        return self._patients.get(patient_id)

    def reconfigure(self, patient_id: str) -> None:
        """The patient's record changed (covariates): rebuild its prior from the stored record
        and replay its whole history on it, in the loop's next iteration. Thread-safe."""
        with self._lock:
            self._reconfigured.add(patient_id)

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> Assimilator:
        bind = getattr(self.evaluator, "bind", None)
        if bind is not None:  # the evaluator may run slow work on its own thread and report later
            bind(self._emit, self.busy)
        self.recover()
        self._writer = threading.Thread(target=self._write_checkpoints, name="mipd-checkpoint", daemon=True)
        self._writer.start()
        self._thread = threading.Thread(target=self._loop, name="mipd-assimilator", daemon=True)
        self._thread.start()
        if self.timing.tick_s > 0:
            self._ticker = threading.Thread(target=self._tick_forever, name="mipd-tick", daemon=True)
            self._ticker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            # No timeout: the batch in hand finishes (a thread left inside XLA at exit aborts the process).
            self._thread.join()
        if self._ticker is not None:
            self._ticker.join()
        close = getattr(self.evaluator, "close", None)
        if close is not None:
            close()
        if self._writer is not None:  # the checkpoints already handed over are written first
            with self._to_write:
                self._writer_closing = True
                self._to_write.notify()
            self._writer.join()
            self._writer = None
        self.checkpoint()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def busy(self) -> bool:
        """Batches queued or being assimilated (the policy thread waits for a gap, see PolicyEvaluator.bind)."""
        return self._queue.unfinished_tasks > 0

    def idle(self) -> bool:
        """Nothing queued, pending or in flight (for tests and the demo's progress line)."""
        evaluator_idle = getattr(self.evaluator, "idle", lambda: True)
        return self._queue.unfinished_tasks == 0 and not self._waiting and evaluator_idle()

    def recover(self) -> None:
        """Timelines for every configured patient, from checkpoints plus the stored events after them."""
        works = []
        for patient in self.db.patients():
            if not self.owns(patient.patient_id):
                continue
            timeline = self._timeline(patient)
            readings = self.store.readings(patient.patient_id)
            sensors = sensor_history(patient, load_model(patient.model), readings)
            history = self._history(patient, readings, sensors)
            self._sensors[patient.patient_id] = sensors.devices
            self._sensor_keys[patient.patient_id] = {e.key for e in history if e.key.startswith("s:")}
            checkpoint = self.db.checkpoint(patient.patient_id)
            start = timeline.prior
            if checkpoint is not None:
                n_before = sum(1 for e in history if e.time <= checkpoint.time_h)
                posterior = _readable(checkpoint, patient)
                # a checkpoint taken before a covariate change holds the old prior: replay instead
                if posterior is not None and n_before == checkpoint.n_events and dict(posterior.covariates[0]) == patient.covariates_at(checkpoint.time_h):
                    start = Snapshot(checkpoint.time_h, checkpoint.n_events, posterior)
                    timeline.current, timeline.snapshots = start, [start]
                    self._counted[patient.patient_id] = checkpoint.n_events  # assimilated by an earlier run
                else:
                    self.metrics.rewinds.labels("recovery").inc()
            rest = [e for e in history if e.time > start.time]
            if rest:
                timeline.busy = True
                works.append(Work(patient.patient_id, start, rest, "append"))
        if works:
            self._run(works)
        log.info("recovered %d patients (%d with events to replay)", len(self._timelines), len(works))

    # -- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            items = self._take(self.timing.batch_window_s)
            try:
                self._admit(items)
                now = time.monotonic()
                works = self._replays_for_new_records()
                works += [w for pid in sorted(self._waiting) if (w := self._timelines[pid].due(now)) is not None]
                self._waiting = {pid for pid in self._waiting if self._timelines[pid].pending}
                if works:
                    self._run(works)
                if now - self._last_checkpoint >= self.timing.checkpoint_interval_s:
                    self.checkpoint()
            except Exception:  # the loop must survive a bug in one batch; the events stay in the store
                log.exception("assimilation loop iteration failed")
                self.metrics.failures.inc()
            finally:
                for _ in items:  # only now are they through: idle() counts a batch until its update ran
                    self._queue.task_done()

    def _replays_for_new_records(self) -> list[Work]:
        """Full replays for the patients whose record changed (see :meth:`reconfigure`)."""
        with self._lock:
            changed, self._reconfigured = self._reconfigured, set()
        works = []
        for patient_id in sorted(changed):
            old = self._timelines.get(patient_id)
            record = self.db.patient(patient_id)
            if old is None or record is None:
                continue  # not (yet) monitored here: its first event builds the prior from the record
            # Events still waiting out the reorder window are committed, so the store has them;
            # they ride along in case the store does not answer for them yet (an InfluxDB spool).
            waiting = [event for _, event in old.pending.values()]
            timeline = self._timeline(record)
            timeline.busy = True
            self._waiting.discard(patient_id)
            works.append(Work(patient_id, None, waiting, "full"))
        return works

    def _take(self, window_s: float) -> list[tuple[float, Batch]]:
        items = []
        try:
            items.append(self._queue.get(timeout=window_s))
        except queue.Empty:
            return items
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                items.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return items

    def _admit(self, items: Iterable[tuple[float, Batch]]) -> None:
        for arrived, batch in items:
            for patient_id, event in self._events_of(batch):
                timeline = self._timelines.get(patient_id)
                if timeline is None or event.time < 0:
                    self.metrics.events.labels("ignored").inc()
                    continue
                if not timeline.admit(event, arrived):
                    self.metrics.events.labels("duplicate").inc()
                    continue
                self.metrics.events.labels("admitted").inc()
                self._waiting.add(patient_id)

    def _events_of(self, batch: Batch) -> Iterable[tuple[str, TimelineEvent]]:
        for reading in batch.readings:
            patient = self._known(reading.patient_id)
            if patient is None:
                continue
            model = load_model(patient.model)
            if (event := reading_event(patient, model, reading)) is None:
                continue
            if has_sensor(model, event.event.analyte) and self.filters.method != "map":
                seen = self._sensors.setdefault(patient.patient_id, {}).get(event.event.analyte, set())
                if reading.device_id not in seen:
                    for change in self._sensor_changes(patient, model, batch):
                        yield patient.patient_id, change
            yield patient.patient_id, event
        for dose in batch.doses:
            patient = self._known(dose.patient_id)
            if patient is not None and (event := dose_event(patient, dose)) is not None:
                yield patient.patient_id, event

    def _sensor_changes(self, patient: PatientRecord, model, batch: Batch) -> list[TimelineEvent]:
        """A device not seen before reads a sensor analyte: the sensor changes that the stored
        readings and this batch imply, in measurement-time order (not arrival order: the
        first device in time is the one inserted at the origin), less those already emitted."""
        readings = self.store.readings(patient.patient_id) + [r for r in batch.readings if r.patient_id == patient.patient_id]
        sensors = sensor_history(patient, model, readings)
        self._sensors[patient.patient_id] = sensors.devices
        emitted = self._sensor_keys.setdefault(patient.patient_id, set())
        changes = [e for e in sensors.changes if e.key not in emitted]
        emitted.update(e.key for e in changes)
        return changes

    def _known(self, patient_id: str) -> PatientRecord | None:
        if patient_id not in self._patients:  # a patient configured after start
            if not self.owns(patient_id):
                return None
            record = self.db.patient(patient_id)
            if record is None:
                return None
            self._timeline(record)
        return self._patients[patient_id]

    def _timeline(self, patient: PatientRecord) -> Timeline:
        model = load_model(patient.model)
        prior = init(
            model, patient.covariates, patient_seed(self.filters.seed, patient.patient_id),
            self.filters.n_particles, self.filters.method,
        )
        timeline = Timeline(
            patient.patient_id, Snapshot(float("-inf"), 0, prior),
            reorder_window_s=self.timing.reorder_window_s, snapshot_every_h=self.timing.snapshot_every_h,
        )
        with self._lock:
            self._patients[patient.patient_id] = patient
            self._timelines[patient.patient_id] = timeline
        return timeline

    def _history(
        self, patient: PatientRecord, readings: list | None = None, sensors: SensorHistory | None = None
    ) -> list[TimelineEvent]:
        """Every stored event of the patient, in timeline order (the store is the record; covariate
        changes come from the patient's record, sensor changes from the readings' device ids,
        except for MAP, which cannot take them). `readings` and their `sensors`, when the caller
        has them already."""
        model = load_model(patient.model)
        readings = self.store.readings(patient.patient_id) if readings is None else readings
        events = [reading_event(patient, model, r) for r in readings]
        if self.filters.method != "map":
            events += (sensors or sensor_history(patient, model, readings)).changes
        events += [dose_event(patient, d) for d in self.store.doses(patient.patient_id)]
        events += covariate_events(patient)
        return sorted((e for e in events if e is not None and e.time >= 0), key=lambda e: e.order)

    # -- assimilation -----------------------------------------------------------------

    def _run(self, works: list[Work]) -> None:
        groups: dict[str, list[Work]] = defaultdict(list)
        for work in works:
            if work.kind == "full":
                # The store is the record; the released events are added in case they are not
                # queryable yet (an InfluxDB spool that has not drained).
                stored = {e.key: e for e in self._history(self._patients[work.patient_id])}
                stored.update({e.key: e for e in work.events})
                events = sorted(stored.values(), key=lambda e: e.order)
                work = Work(work.patient_id, self._timelines[work.patient_id].prior, events, "full")
            if work.kind != "append":
                self.metrics.rewinds.labels(work.kind).inc()
            groups[self._patients[work.patient_id].model].append(work)
        for model_name in sorted(groups):
            group = groups[model_name]
            for i in range(0, len(group), self.timing.max_batch):
                self._update(group[i : i + self.timing.max_batch])

    def _update(self, works: list[Work]) -> None:
        started = time.perf_counter()
        try:
            batch = update(stack([w.start.posterior for w in works]), [[e.event for e in w.events] for w in works])
            posteriors = split(batch)
        except Exception:
            if len(works) > 1:  # find the one that fails; the others go on
                for work in works:
                    self._update([work])
                return
            log.exception("patient %s: update failed; its %d events stay stored", works[0].patient_id, len(works[0].events))
            self.metrics.failures.inc()
            self._timelines[works[0].patient_id].busy = False
            return
        self.metrics.update_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(works))
        # Summaries first: whoever sees the new posterior also finds its summary.
        self._summarise(works, batch)
        new_events = 0
        with self._lock:
            for work, posterior in zip(works, posteriors):
                timeline = self._timelines[work.patient_id]
                timeline.complete(work, posterior, work.events if work.kind == "full" else None)
                self._dirty.add(work.patient_id)
                # the metric counts each event once, however often rewinds and replays revisit it
                counted = self._counted.get(work.patient_id, 0)
                new_events += max(0, timeline.current.n_events - counted)
                self._counted[work.patient_id] = max(counted, timeline.current.n_events)
        self.metrics.assimilated.inc(new_events)
        self._evaluate(works, posteriors)
        self._rejuvenate(works, posteriors)

    def _rejuvenate(self, works: list[Work], posteriors: list[Posterior]) -> None:
        """Resample-move (assimilation.online.rejuvenate) for the patients whose particle cloud
        has been resampled ``rejuvenate_after`` times since its last move, against their whole
        stored history. Skipped for IOV models, patients with covariate or sensor changes and
        histories the store does not hold in full yet (they are tried again after their next update)."""
        every = self.filters.rejuvenate_after
        if every <= 0 or self.filters.method != "pf":
            return
        chosen, histories = [], []
        for work, posterior in zip(works, posteriors):
            patient = self._patients[work.patient_id]
            resamples = int(np.asarray(posterior.state.resamples)[0])
            if resamples - self._moved_at.get(work.patient_id, 0) < every:
                continue
            if posterior.model.occasions is not None or patient.covariate_changes:
                continue
            current = self._timelines[work.patient_id].current
            done = [e for e in self._history(patient) if e.order <= work.events[-1].order] if work.events else []
            if len(done) != current.n_events or current.posterior is not posterior:
                continue
            if any(isinstance(e.event, SensorChange) for e in done):
                continue
            chosen.append((work.patient_id, current))
            histories.append([e.event for e in done])
        if not chosen:
            return
        try:
            moved, _ = rejuvenate(stack([c.posterior for _, c in chosen]), histories, self.filters.rejuvenate_moves)
        except Exception:
            log.exception("resample-move failed for %d patients; their posteriors are kept", len(chosen))
            self.metrics.failures.inc()
            return
        with self._lock:
            for (patient_id, current), posterior in zip(chosen, split(moved)):
                timeline = self._timelines[patient_id]
                if timeline.current is current:
                    timeline.current = current._replace(posterior=posterior)
                    self._dirty.add(patient_id)
                self._moved_at[patient_id] = int(np.asarray(posterior.state.resamples)[0])
        self.metrics.rejuvenations.inc(len(chosen))

    def _summarise(self, works: list[Work], batch: Posterior) -> None:
        if not self._summary_sinks:
            return
        try:
            times = [float(t) for t in np.asarray(batch.state.time)[: len(works)]]
            summaries = summarise(batch, [self._patients[w.patient_id] for w in works], times)
        except Exception:
            log.exception("posterior summaries failed")
            self.metrics.failures.inc()
            return
        for sink in self._summary_sinks:
            try:
                sink(summaries)
            except Exception:
                log.exception("summary sink %r failed", sink)

    def _evaluate(self, works: list[Work], posteriors: list[Posterior]) -> None:
        if self.evaluator is None:
            return
        alerts: list[AlertRecord] = []
        now = time.time()
        evaluate_batch = getattr(self.evaluator, "evaluate_batch", None)
        if evaluate_batch is not None:
            try:
                alerts = evaluate_batch([(self._patients[w.patient_id], p, w) for w, p in zip(works, posteriors)], now)
            except Exception:
                log.exception("policy evaluation failed for a batch of %d patients", len(works))
                self.metrics.failures.inc()
            self._emit(alerts)
            return
        for work, posterior in zip(works, posteriors):
            try:
                alerts += self.evaluator(self._patients[work.patient_id], posterior, work, now)
            except Exception:
                log.exception("policy evaluation failed for patient %s", work.patient_id)
                self.metrics.failures.inc()
        self._emit(alerts)

    def _emit(self, alerts: list[AlertRecord]) -> None:
        if not alerts:
            return
        for alert in alerts:
            self.metrics.alerts.labels(alert.kind, alert.severity).inc()
        for sink in self._sinks:
            try:
                sink(alerts)
            except Exception:
                log.exception("alert sink %r failed", sink)

    def _tick_forever(self) -> None:
        """The wall-clock tick on a thread of its own: it walks every patient (silent sensors,
        records changed elsewhere), O(patients) Python that on the loop thread held up every
        reading for up to ~2 s once a minute at 10,000 patients."""
        while not self._stopping.wait(self.timing.tick_s):
            try:
                self._tick()
            except Exception:
                log.exception("wall-clock tick failed")
                self.metrics.failures.inc()

    def _tick(self) -> None:
        # Objects that survived to this tick (patients' timelines, policy states, compiled
        # functions) go to the permanent generation: otherwise the cyclic GC's full collections
        # walk them all and stop every thread for 0.5-1 s every ~30 s at 10,000 patients,
        # collecting next to nothing (benchmarks/e2e.py). Reference counting still frees all
        # acyclic garbage; cycles older than a tick are not collected.
        gc.freeze()
        self._notice_changed_records()
        tick = getattr(self.evaluator, "tick", None)
        if tick is not None:
            with self._lock:
                patients = [self._patients[pid] for pid in self._timelines]
            self._emit(tick(patients, time.time()))

    def _notice_changed_records(self) -> None:
        """Covariates changed in the shared database by another process (the API of a scaled-out
        deployment, the CLI) are picked up here; in one process the API calls reconfigure()."""
        with self._lock:
            known = {pid: self._patients[pid] for pid in self._timelines}
        for record in self.db.patients():
            if record.patient_id in known and record.covariates != known[record.patient_id].covariates:
                self.reconfigure(record.patient_id)

    def checkpoint(self) -> None:
        """Persist the current posterior of every patient that changed since the last call.

        Posteriors are immutable, so only references are taken here; serialising them (~130 KiB
        each) and the database write happen on the checkpoint thread while it runs (they stalled
        the assimilation loop for seconds at 10,000 patients). A patient's newer snapshot
        replaces one still waiting to be written, so a slow disk costs at most one pending
        posterior per patient. Without the thread (before start, after stop) they happen here."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            snapshot = {pid: self._timelines[pid].current for pid in sorted(dirty)}
        if snapshot:
            if self._writer is not None:
                with self._to_write:
                    self._unwritten.update(snapshot)
                    self._to_write.notify()
            else:
                self._save(sorted(snapshot.items()))
        self._last_checkpoint = time.monotonic()

    def _save(self, snapshot) -> None:
        checkpoints = [Checkpoint(pid, start.time, start.n_events, to_bytes(start.posterior)) for pid, start in snapshot]
        self.db.save_checkpoints(checkpoints, writer=self.name)
        self.metrics.checkpoints.inc(len(checkpoints))

    def _write_checkpoints(self) -> None:
        """The checkpoint thread: writes what :meth:`checkpoint` hands over, CHECKPOINT_CHUNK
        patients per transaction, paced so that one round is spread over most of the checkpoint
        interval. Written at once, 10,000 posteriors (~0.5 GB to serialise and commit) stall
        assimilation and ingest commits for ~2 s every interval: the steady p99 rises from
        0.19 s without checkpoints to 2.0 s (benchmarks/e2e.py). On stop, the rest is written
        without pauses."""
        pace_until = 0.0  # monotonic time by which the current round should be written
        while True:
            with self._to_write:
                while not self._unwritten and not self._writer_closing:
                    self._to_write.wait()
                if not self._unwritten:
                    return
                closing = self._writer_closing
                if time.monotonic() >= pace_until:  # a new round: spread it over 80 % of the interval
                    pace_until = time.monotonic() + 0.8 * self.timing.checkpoint_interval_s
                keys = list(itertools.islice(self._unwritten, CHECKPOINT_CHUNK))  # handed-over order
                chunk = [(pid, self._unwritten.pop(pid)) for pid in keys]
                left = len(self._unwritten)
            started = time.monotonic()
            try:
                self._save(chunk)
            except Exception:  # a failed write loses no event (they are in the store); the next one retries
                log.exception("checkpoint write failed")
                with self._lock:
                    self._dirty.update(pid for pid, _ in chunk)
            if left and not closing:
                # the time this round has left, shared by the chunks still to write
                share = max(0.0, pace_until - time.monotonic()) / (left / CHECKPOINT_CHUNK + 1)
                pause = share - (time.monotonic() - started)
                if pause > 0:
                    with self._to_write:
                        self._to_write.wait_for(lambda: self._writer_closing, timeout=pause)


def _readable(checkpoint, patient: PatientRecord):
    """The checkpoint's posterior, or None if this version cannot read it (e.g. a state layout
    changed by an upgrade): the patient is then replayed from the store, which loses nothing."""
    try:
        return from_bytes(checkpoint.posterior, load_model(patient.model))
    except Exception as error:  # noqa: BLE001 - any unreadable snapshot means "replay"
        log.warning("checkpoint of %s not readable (%s); replaying its history", patient.patient_id, error)
        return None
