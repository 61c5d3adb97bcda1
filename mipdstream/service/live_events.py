"""Live updates for the dashboard's event stream (SSE): new readings and doses, posterior updates, alerts and
decisions, each with an id ``<boot>-<seq>`` so a reconnecting client resumes after the last
one it saw (``Last-Event-ID``). The last :data:`KEEP` events stay in memory; a client whose
id is from another boot or too old gets a ``reset`` event (reload everything)."""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from ingest.records import Batch
from mipdstream.service.state_db import AlertRecord, ServiceDB
from mipdstream.service.summaries import LEVELS, PosteriorSummary

KEEP = 10_000


@dataclass(frozen=True)
class LiveEvent:
    seq: int
    kind: str  # reading | dose | posterior | alert | recommendation | regimen
    team: str
    patient_id: str
    data: dict[str, Any]


class EventHub:
    def __init__(self, db: ServiceDB):
        self.db = db
        self.boot = secrets.token_hex(4)
        self._events: deque[LiveEvent] = deque(maxlen=KEEP)
        self._seq = 0
        self._lock = threading.Lock()
        self._teams: dict[str, str] = {}

    def event_id(self, event: LiveEvent) -> str:
        return f"{self.boot}-{event.seq}"

    def _team(self, patient_id: str) -> str | None:
        if patient_id not in self._teams:
            patient = self.db.patient(patient_id)
            if patient is None:
                return None
            self._teams[patient_id] = patient.team
        return self._teams[patient_id]

    def publish(self, kind: str, patient_id: str, data: dict[str, Any]) -> None:
        team = self._team(patient_id)
        if team is None:
            return
        with self._lock:
            self._seq += 1
            self._events.append(LiveEvent(self._seq, kind, team, patient_id, {"patient_id": patient_id, **data}))

    def after(self, last_event_id: str | None, team: str | None) -> tuple[int, list[LiveEvent], bool]:
        """(sequence the client has seen, events of ``team`` after ``last_event_id``, whether
        the client must reset because events it missed are no longer held)."""
        start, reset = self._start(last_event_id)
        if reset:
            return self.latest(), [], True
        return start, self.since(start, team), False

    def since(self, seq: int, team: str | None) -> list[LiveEvent]:
        with self._lock:
            if not self._events or self._events[-1].seq <= seq:
                return []
            return [e for e in self._events if e.seq > seq and e.team == team]

    def latest(self) -> int:
        with self._lock:
            return self._seq

    def _start(self, last_event_id: str | None) -> tuple[int, bool]:
        if not last_event_id:
            return self.latest(), False
        boot, _, seq = last_event_id.partition("-")
        if boot != self.boot or not seq.isdigit():
            return 0, True
        with self._lock:
            oldest = self._events[0].seq if self._events else self._seq + 1
            latest = self._seq
        return int(seq), not oldest - 1 <= int(seq) <= latest

    # -- sinks wired to the live service -----------------------------------------------------

    def on_commit(self, batch: Batch, committed_at: float | None = None) -> None:
        for r in batch.readings:
            self.publish("reading", r.patient_id, {"device_id": r.device_id, "reading_id": r.reading_id, "analyte": r.analyte,
                                                   "value": r.value, "unit": r.unit, "measured_at": r.measured_at})
        for d in batch.doses:
            self.publish("dose", d.patient_id, {"device_id": d.device_id, "dose_id": d.dose_id, "amount_mg": d.amount_mg,
                                                "given_at": d.given_at, "duration_s": d.duration_s, "status": d.status})

    def on_alerts(self, alerts: list[AlertRecord]) -> None:
        for a in alerts:
            self.publish("alert", a.patient_id, {"alert_id": a.alert_id, "kind": a.kind, "severity": a.severity,
                                                 "message": a.message, "raised_at": a.raised_at, "status": a.status})

    def on_summaries(self, summaries: list[PosteriorSummary]) -> None:
        for s in summaries:
            self.publish("posterior", s.patient_id, {"analyte": s.analyte, "time_h": s.time_h, "epoch_s": s.epoch_s,
                                                     "levels": list(LEVELS), "quantiles": list(s.quantiles)})


def follow(hub: EventHub, consumer, assimilator) -> EventHub:
    """Feed ``hub`` from what the service commits (readings, doses), raises (alerts) and
    summarises (posteriors). ``consumer``: anything with ``on_commit``; ``assimilator``: with
    ``add_sink`` and ``add_summary_sink``."""
    consumer.on_commit(hub.on_commit)
    assimilator.add_sink(hub.on_alerts)
    assimilator.add_summary_sink(hub.on_summaries)
    return hub
