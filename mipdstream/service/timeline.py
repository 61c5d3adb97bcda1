"""One patient's events in measurement-time order, and where to restart when one comes late.

The posterior after a set of events is a function of the events *sorted by time*: the
filters carry their random key in the state, so assimilating ``a`` then ``b`` equals
assimilating ``a + b`` at once. The timeline keeps that invariant while events arrive out
of order:

- a new event waits ``reorder_window_s`` (wall clock) for earlier ones to catch up;
- an event older than what is already assimilated (a *late* event) rewinds the patient to
  the latest snapshot before its time and replays everything after it, in order;
- an event older than every retained snapshot needs the patient's whole history, which the
  caller loads from the store (the store, not memory, is the record of what happened).

Times are model hours since the patient's origin. Pure Python: no I/O, no JAX.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, NamedTuple


_RANK = {"s:": -1, "r:": 0, "c:": 1, "d:": 2}


class TimelineEvent(NamedTuple):
    """A dose or reading on the patient's clock.

    ``key`` identifies the event across redeliveries (``r:<device>:<reading id>``,
    ``d:<device>:<dose id>``, ``c:<epoch s>`` for a covariate change or ``s:<device>:<analyte>``
    for a new sensor); ``event`` is what the filter assimilates.
    """

    time: float
    key: str
    event: Any

    @property
    def order(self) -> tuple:
        # Sensor changes, readings, covariate changes, then doses at equal times (a trough is drawn
        # before the dose; assimilation.events.sort_events), then by key, so every replay sorts identically.
        return (self.time, _RANK.get(self.key[:2], 2), self.key)


class Snapshot(NamedTuple):
    """A posterior that has assimilated exactly the ``n_events`` events with time <= ``time``.

    The prior is the snapshot at time -inf with no events.
    """

    time: float
    n_events: int
    posterior: Any


class Work(NamedTuple):
    """Assimilate ``events`` (sorted) on top of ``start``. ``kind``: append | rewind | full."""

    patient_id: str
    start: Snapshot | None  # None for "full": restart from the prior with the stored history
    events: list[TimelineEvent]
    kind: str


@dataclass
class Timeline:
    patient_id: str
    prior: Snapshot
    reorder_window_s: float = 2.0
    snapshot_every_h: float = 6.0
    keep_snapshots: int = 4
    current: Snapshot = None  # type: ignore[assignment]
    snapshots: list[Snapshot] = field(default_factory=list)  # oldest first; current excluded
    history: list[TimelineEvent] = field(default_factory=list)  # assimilated, after snapshots[0]
    pending: dict[str, tuple[float, TimelineEvent]] = field(default_factory=dict)  # key -> (arrived, event)
    keys: set[str] = field(default_factory=set)  # assimilated keys after snapshots[0]
    busy: bool = False  # a Work is in flight; do not hand out another

    def __post_init__(self) -> None:
        if self.current is None:
            self.current = self.prior
        if not self.snapshots:
            self.snapshots = [self.current]

    # -- arrival ----------------------------------------------------------------------

    def admit(self, event: TimelineEvent, arrived_at: float) -> bool:
        """Queue an event; False for a duplicate of one already queued or assimilated."""
        if event.key in self.keys or event.key in self.pending:
            return False
        self.pending[event.key] = (arrived_at, event)
        return True

    # -- release ----------------------------------------------------------------------

    def due(self, now: float) -> Work | None:
        """The work to do now, if any event has waited out the reorder window."""
        if self.busy or not self.pending:
            return None
        ready = [e for arrived, e in self.pending.values() if arrived <= now - self.reorder_window_s]
        if not ready:
            return None
        cut = max(e.order for e in ready)
        released = sorted((e for _, e in self.pending.values() if e.order <= cut), key=lambda e: e.order)
        for e in released:
            del self.pending[e.key]
        self.busy = True
        first = released[0]
        if first.time > self.current.time:
            return Work(self.patient_id, self.current, released, "append")
        oldest = self.snapshots[0]
        if first.time <= oldest.time and oldest is not self.prior:
            return Work(self.patient_id, None, released, "full")
        start = max((s for s in self.snapshots if s.time < first.time), key=lambda s: s.time)
        replay = [e for e in self.history if e.time > start.time]
        return Work(self.patient_id, start, sorted(replay + released, key=lambda e: e.order), "rewind")

    # -- completion -------------------------------------------------------------------

    def complete(self, work: Work, posterior: Any, events: list[TimelineEvent] | None = None) -> None:
        """Record the posterior after ``work``; ``events`` is the full history for "full" work."""
        self.busy = False
        if work.kind == "full":
            assert events is not None, "full work needs the history it replayed"
            start, done = self.prior, sorted(events, key=lambda e: e.order)
            self.snapshots, self.history = [self.prior], []
        else:
            start, done = work.start, work.events
        self.snapshots = [s for s in self.snapshots if s.time <= start.time]
        self.history = [e for e in self.history if e.time <= start.time] + list(done)
        self.current = Snapshot(done[-1].time if done else start.time, start.n_events + len(done), posterior)
        if self.current.time - self.snapshots[-1].time >= self.snapshot_every_h:
            self.snapshots.append(self.current)
        self._trim()

    def abandon(self, work: Work) -> None:
        """Put the events of failed work back (they will be retried)."""
        self.busy = False
        released = work.events if work.kind != "rewind" else [e for e in work.events if e.key not in self.keys]
        for e in released:
            self.pending.setdefault(e.key, (float("-inf"), e))

    def _trim(self) -> None:
        if len(self.snapshots) > self.keep_snapshots:
            self.snapshots = self.snapshots[-self.keep_snapshots:]
        horizon = self.snapshots[0].time if self.snapshots[0] is not self.prior else float("-inf")
        index = bisect.bisect_right([e.time for e in self.history], horizon)
        self.history = self.history[index:]
        self.keys = {e.key for e in self.history}
