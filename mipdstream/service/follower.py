"""The API of a scaled-out deployment (``mipd api``): no ingest consumer and no assimilator in
this process, only the shared state the workers keep.

- Posteriors are the assimilation workers' latest checkpoints in the shared service database
  (at most ``checkpoint_interval_s`` behind the workers).
- The live stream follows ingest's committed-event notifications
  (``mipd/v1/svc/committed/#``, see :mod:`ingest.committed`) and the care teams' alert topics.
- A dose a clinician records is written to the store and announced exactly as an ingest
  worker announces what it commits, so the worker that owns the patient assimilates it.
- A covariate change is written to the database; the owning worker notices it on its next
  wall-clock tick (``stale_check_s``) and replays the patient on the new prior.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from assimilation import load_model
from assimilation.online import Posterior, from_bytes
from ingest.committed import COMMITTED_ROOT, decode, encode
from ingest.mqtt import connect
from ingest.records import Batch
from mipdstream.config import Settings
from mipdstream.runtime import IngestService, open_registry, open_store
from mipdstream.service.assimilator import AlertSink, FilterSettings, SummarySink
from mipdstream.service.live import LiveService, filter_settings, http_server
from mipdstream.service.live_events import EventHub, follow
from mipdstream.service.metrics import ServiceMetrics
from mipdstream.service.recommendations import recommendation_sink
from mipdstream.service.state_db import AlertRecord, ServiceDB
from wire.topics import TEAM_ROOT

log = logging.getLogger(__name__)


@dataclass
class FeedStats:
    readings: int = 0  # readings announced since this process started


class CommittedFeed:
    """Stands in for the ingest consumer: commit listeners hear what ingest workers committed."""

    def __init__(self) -> None:
        self.stats = FeedStats()
        self._listeners: list[Callable[[Batch, float | None], None]] = []

    def on_commit(self, listener: Callable[[Batch, float | None], None]) -> None:
        self._listeners.append(listener)

    def deliver(self, batch: Batch) -> None:
        self.stats.readings += len(batch.readings)
        for listener in self._listeners:
            listener(batch, None)


class CheckpointedPosteriors:
    """Stands in for the assimilator: each patient's posterior as its worker last checkpointed it."""

    def __init__(self, db: ServiceDB, filters: FilterSettings, announce: Callable[[Batch], None]):
        self.db, self.filters, self._announce = db, filters, announce
        self._alert_sinks: list[AlertSink] = []
        self._cache: dict[str, tuple[float, int, Posterior]] = {}
        self._lock = threading.Lock()

    def posterior(self, patient_id: str) -> tuple[Posterior, float] | None:
        checkpoint = self.db.checkpoint(patient_id)
        if checkpoint is None:
            return None
        with self._lock:
            cached = self._cache.get(patient_id)
            if cached is None or cached[:2] != (checkpoint.time_h, checkpoint.n_events):
                patient = self.db.patient(patient_id)
                posterior = from_bytes(checkpoint.posterior, load_model(patient.model))
                cached = self._cache[patient_id] = (checkpoint.time_h, checkpoint.n_events, posterior)
        return cached[2], cached[0]

    def add_sink(self, sink: AlertSink) -> None:
        self._alert_sinks.append(sink)

    def add_summary_sink(self, sink: SummarySink) -> None:
        """Nothing is summarised here: the workers write their summaries to the database."""

    def alerts(self, alerts: list[AlertRecord]) -> None:
        for sink in self._alert_sinks:
            try:
                sink(alerts)
            except Exception:
                log.exception("alert sink %r failed", sink)

    def submit(self, batch: Batch, committed_at: float | None = None) -> None:
        """A batch the API committed itself (a clinician's dose): tell the owning worker."""
        self._announce(batch)

    def reconfigure(self, patient_id: str) -> None:
        """Nothing to do here: the owning worker notices the changed record on its next tick."""

    def queue_depth(self) -> int:
        return 0


@contextlib.contextmanager
def follower_service(settings: Settings) -> Iterator[LiveService]:
    """The API and dashboard over a scaled-out deployment's shared state (see the module doc)."""
    store, registry, db = open_store(settings), open_registry(settings), ServiceDB(settings.service_db_path)
    feed = CommittedFeed()
    client = None

    def announce(batch: Batch) -> None:
        for topic, payload in encode(batch):
            client.publish(topic, payload, qos=1).wait_for_publish(10)

    posteriors = CheckpointedPosteriors(db, filter_settings(settings), announce)

    def on_message(_client, _userdata, message) -> None:
        try:
            if message.topic.startswith(COMMITTED_ROOT + "/"):
                feed.deliver(decode(message.payload))
            elif message.topic.startswith(TEAM_ROOT + "/"):
                posteriors.alerts([AlertRecord(**json.loads(message.payload))])
        except Exception:  # a message we cannot read must not stop the network thread
            log.exception("could not handle a message on %s", message.topic)

    client, _ = connect(settings.broker_url, f"{settings.ingest_client_id}-api", protocol=settings.mqtt_protocol,
                        subscriptions=[(f"{COMMITTED_ROOT}/#", 1), (f"{TEAM_ROOT}/+/alert", 1)], on_message=on_message)
    events = follow(EventHub(db), feed, posteriors)
    # the workers stored each recommendation; this announces it (and stores it if it came first)
    posteriors.add_sink(recommendation_sink(db, lambda rec: events.publish(
        "recommendation", rec.patient_id, {"recommendation_id": rec.recommendation_id, "status": rec.status})))
    live = LiveService(settings, IngestService(feed, store, registry, settings.broker_url), db, posteriors, ServiceMetrics(), events)
    try:
        with http_server(live, settings.http_host, settings.http_port) as url:
            live.http_url = url
            yield live
    finally:
        client.disconnect()
        client.loop_stop()
        registry.close()
        store.close()
        db.close()
