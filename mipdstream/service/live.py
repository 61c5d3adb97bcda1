"""The whole running system from one :class:`Settings`: ingest -> assimilation -> policy -> alerts,
with the HTTP API. ``mipd run`` and ``mipd demo`` both enter :func:`live_service`."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from ingest.broker import free_port
from mipdstream.config import Settings
from mipdstream.runtime import IngestService, ingest_service, use_compilation_cache
from mipdstream.service.alert_publisher import AlertPublisher
from mipdstream.service.assimilator import Assimilator, Evaluator, FilterSettings, Timing
from mipdstream.service import targets
from mipdstream.service.live_events import EventHub, follow
from mipdstream.service.policy import PolicyEvaluator
from mipdstream.service.metrics import ServiceMetrics
from mipdstream.service.recommendations import recommendation_sink
from mipdstream.service.state_db import ServiceDB

log = logging.getLogger(__name__)


@dataclass
class LiveService:
    """What the API reads and drives: settings, ingest (store, registry), the service DB, the
    assimilator (posteriors) and the live event stream."""

    settings: Settings
    ingest: IngestService
    db: ServiceDB
    assimilator: Assimilator
    metrics: ServiceMetrics
    events: EventHub
    http_url: str | None = None


def keep_derived_state(db: ServiceDB, assimilator, evaluator, events: EventHub | None = None) -> None:
    """What a worker derives and the API serves goes to the service DB: posterior summaries,
    recommendations (announced on ``events``) and the policy's assessments."""
    publish = (lambda rec: None) if events is None else (lambda rec: events.publish(
        "recommendation", rec.patient_id, {"recommendation_id": rec.recommendation_id, "status": rec.status}))
    assimilator.add_summary_sink(db.add_summaries)
    assimilator.add_sink(recommendation_sink(db, publish))
    if isinstance(evaluator, PolicyEvaluator):
        evaluator.target_of = targets.resolver(db)  # each patient's own target, as the team set it
        evaluator.add_assessment_record_sink(db.save_assessment)


def filter_settings(settings: Settings) -> FilterSettings:
    return FilterSettings(settings.filter_method, settings.filter_particles, settings.filter_seed,
                          settings.rejuvenate_after_resamples, settings.rejuvenate_moves)


def timing(settings: Settings) -> Timing:
    return Timing(
        reorder_window_s=settings.reorder_window_s,
        batch_window_s=settings.assimilation_batch_window_ms / 1000,
        max_batch=settings.assimilation_max_batch,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        snapshot_every_h=settings.snapshot_every_h,
        queue_max=settings.assimilation_queue_max,
        tick_s=settings.stale_check_s,
    )


def _ingest_metrics(metrics: ServiceMetrics, ingest: IngestService) -> None:
    from prometheus_client import Gauge

    stats = ingest.consumer.stats
    for name, text in (("received", "MQTT messages received"), ("readings", "Readings stored"),
                       ("doses", "Dose events stored"), ("rejected", "Messages rejected with a reason")):
        gauge = Gauge(f"mipd_ingest_{name}", f"{text} since start", registry=metrics.registry)
        gauge.set_function(lambda name=name: getattr(stats, name))
    Gauge("mipd_ingest_queue_depth", "MQTT messages waiting to be stored", registry=metrics.registry).set_function(
        stats.queue_depth
    )


def _write_derived_to_influx(assimilator: Assimilator, store) -> None:
    """Posterior bands and alerts beside the readings, for Grafana (InfluxDB store only)."""
    from ingest.influx_store import InfluxStore
    from mipdstream.service.summaries import InfluxDerivedWriter

    if isinstance(store, InfluxStore):
        writer = InfluxDerivedWriter(store)
        assimilator.add_summary_sink(writer.summaries)
        assimilator.add_sink(writer.alerts)


@contextlib.contextmanager
def http_server(live: LiveService, host: str, port: int) -> Iterator[str]:
    """Serve the API and dashboard of ``live`` on a thread; yields the base URL."""
    from mipdstream.api import create_app

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(live), host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="mipd-http", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _sample_requests(settings: Settings, url: str, registry, db: ServiceDB, evaluator, protocol: str, client_id: str):
    """The next-sample publisher, attached to an evaluator that reports its assessments."""
    add = getattr(evaluator, "add_assessment_sink", None)
    if not settings.publish_sample_requests or add is None:
        return None
    from mipdstream.service.sampling import SampleRequestPublisher

    sender = SampleRequestPublisher(url, registry, db, client_id=client_id, protocol=protocol)
    add(sender)
    return sender


@contextlib.contextmanager
def live_service(settings: Settings, evaluator: Evaluator | None = None, serve_http: bool = True) -> Iterator[LiveService]:
    """Start everything; on exit stop ingest first, then checkpoint every posterior."""
    use_compilation_cache(settings)
    with ingest_service(settings, start=False) as ingest:
        db = ServiceDB(settings.service_db_path)
        metrics = ServiceMetrics()
        assimilator = Assimilator(db, ingest.store, filter_settings(settings), timing(settings), evaluator, metrics)
        ingest.consumer.on_commit(assimilator.submit)
        publisher = None
        protocol = "3.1.1" if settings.broker_url == "embedded" else settings.mqtt_protocol
        if settings.publish_alerts:
            publisher = AlertPublisher(ingest.url, db, client_id=f"{settings.ingest_client_id}-alerts", protocol=protocol)
            assimilator.add_sink(publisher)
        requests = _sample_requests(settings, ingest.url, ingest.registry, db, evaluator, protocol,
                                    f"{settings.ingest_client_id}-schedule")
        _write_derived_to_influx(assimilator, ingest.store)
        events = follow(EventHub(db), ingest.consumer, assimilator)
        keep_derived_state(db, assimilator, evaluator, events)
        live = LiveService(settings, ingest, db, assimilator, metrics, events)
        _ingest_metrics(metrics, ingest)
        try:
            assimilator.start()  # recovers every patient before the first new message
            ingest.consumer.start()
            with contextlib.ExitStack() as stack:
                if serve_http:
                    live.http_url = stack.enter_context(http_server(live, settings.http_host, settings.http_port))
                yield live
        finally:
            ingest.consumer.stop()
            assimilator.stop()
            for sender in (publisher, requests):
                if sender is not None:
                    sender.close()
            db.close()


@dataclass
class AssimilationWorker:
    settings: Settings
    db: ServiceDB
    assimilator: Assimilator
    metrics: ServiceMetrics


@contextlib.contextmanager
def assimilation_worker(settings: Settings, evaluator: Evaluator | None = None) -> Iterator[AssimilationWorker]:
    """Shard ``settings.shard_index`` of ``settings.shard_count``: the patients hashed to it,
    fed by the committed-event notifications of separate ingest workers (``MIPD_INGEST_NOTIFY``)."""
    from ingest.committed import decode, shard_of, shard_subscriptions
    from ingest.mqtt import connect
    from mipdstream.runtime import open_registry, open_store

    use_compilation_cache(settings)
    index, count = settings.shard_index, settings.shard_count
    store = open_store(settings)
    db = ServiceDB(settings.service_db_path)
    metrics = ServiceMetrics()
    assimilator = Assimilator(db, store, filter_settings(settings), timing(settings), evaluator, metrics,
                              owns=lambda patient_id: shard_of(patient_id, count) == index, name=f"shard {index}/{count}")
    # Subscribe before recovering, so nothing committed in between is missed (the timeline
    # drops what recovery already replayed).
    feed, _ = connect(settings.broker_url, f"{settings.ingest_client_id}-assimilate-{index}-of-{count}",
                      protocol=settings.mqtt_protocol, subscriptions=shard_subscriptions(index, count),
                      on_message=lambda client, userdata, message: assimilator.submit(decode(message.payload)))
    publisher = requests = None
    registry = open_registry(settings)
    try:
        _write_derived_to_influx(assimilator, store)
        keep_derived_state(db, assimilator, evaluator)  # what `mipd api` serves from the shared database
        if settings.publish_alerts:
            publisher = AlertPublisher(settings.broker_url, db, client_id=f"{settings.ingest_client_id}-alerts-{index}",
                                       protocol=settings.mqtt_protocol)
            assimilator.add_sink(publisher)
        requests = _sample_requests(settings, settings.broker_url, registry, db, evaluator, settings.mqtt_protocol,
                                    f"{settings.ingest_client_id}-schedule-{index}")
        assimilator.start()
        yield AssimilationWorker(settings, db, assimilator, metrics)
    finally:
        feed.disconnect()
        feed.loop_stop()
        assimilator.stop()
        for sender in (publisher, requests):
            if sender is not None:
                sender.close()
        registry.close()
        store.close()
        db.close()
