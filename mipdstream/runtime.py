"""Builds the I/O shell's parts from `Settings`: broker, store, registry, ingest consumer."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from mipdstream.huge_pages import huge_page_environment, huge_page_malloc_available, huge_page_malloc_requested
from ingest.broker import EmbeddedBroker
from ingest.consumer import IngestConsumer
from ingest.influx_store import InfluxStore
from ingest.registry import Registry
from ingest.sqlite_store import SqliteStore
from ingest.store import Store
from mipdstream.config import Settings


GC_YOUNG_THRESHOLD = 10_000
"""Allocations between collections of CPython's youngest generation (its default is 700)."""


def tune_gc_for_streaming() -> None:
    """Collect the youngest generation every `GC_YOUNG_THRESHOLD` allocations, not every 700.

    Ingest allocates a few short-lived objects per message, and the messages waiting in its
    queue for the next batch are alive at a collection: at 700 they survive one, are
    promoted and scanned again by the older generations' collections. In a 50,000-reading probe
    (ingest and a publisher in one process) the collector took 6.7-7.4 us per reading at 700
    and 3.1-3.6 at 10,000, nearly all the difference in the older generations (docs/BENCHMARKS.md).
    A process-wide setting: the service processes call it (`ingest_service`), the library does not.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def restart_with_huge_page_malloc() -> None:
    """Replace this process by itself (same pid, same command line) with glibc's malloc asked
    for transparent huge pages (`mipdstream.huge_pages`: half the run time of a large filter batch
    goes to page faults without). A no-op where the environment already says anything about
    the tunable, or where it cannot take effect; the `mipd` command calls it before anything else.
    """
    if huge_page_malloc_requested() or not huge_page_malloc_available():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, huge_page_environment())
    except OSError as error:  # the interpreter cannot be started again (odd sandboxes): run as is
        logging.getLogger(__name__).warning("not restarted with huge-page malloc: %s", error)


def open_store(settings: Settings) -> Store:
    if settings.store == "sqlite":
        return SqliteStore(settings.sqlite_path)
    return InfluxStore(
        settings.influx_url,
        settings.influx_database,
        settings.spool_dir,
        username=settings.influx_username,
        password=settings.influx_password.get_secret_value() if settings.influx_password else None,
        token=settings.influx_token.get_secret_value() if settings.influx_token else None,
        retention_policy=settings.influx_retention_policy,
        timeout_s=settings.influx_timeout_s,
    )


def use_compilation_cache(settings: Settings) -> None:
    """Point JAX's persistent compilation cache at the data directory (``jax_compilation_cache``).

    The cache key covers the program, its shapes, the jax version and the CPU, so a stale entry
    is never used; a restarted service loads its kernels instead of compiling them again."""
    if not settings.jax_compilation_cache:
        return
    import jax

    settings.jax_cache_dir.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(settings.jax_cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def open_registry(settings: Settings) -> Registry:
    return Registry(settings.registry_path)


@contextlib.contextmanager
def broker_url(settings: Settings) -> Iterator[str]:
    """The configured broker's URL, starting the embedded broker for `embedded`."""
    if settings.broker_url != "embedded":
        yield settings.broker_url
        return
    with EmbeddedBroker(port=settings.embedded_broker_port) as broker:
        yield broker.url


@dataclass
class IngestService:
    consumer: IngestConsumer
    store: Store
    registry: Registry
    url: str


@contextlib.contextmanager
def ingest_service(settings: Settings, start: bool = True) -> Iterator[IngestService]:
    """Broker (if embedded), store, registry and a consumer (started unless ``start`` is
    False: then the caller registers its commit listeners and starts it); all closed on exit."""
    tune_gc_for_streaming()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with broker_url(settings) as url:
        store = open_store(settings)
        registry = open_registry(settings)
        protocol = "3.1.1" if settings.broker_url == "embedded" else settings.mqtt_protocol
        consumer = IngestConsumer(
            url, store, registry,
            client_id=settings.ingest_client_id,
            protocol=protocol,
            batch_max=settings.ingest_batch_max,
            batch_window_s=settings.ingest_batch_window_ms / 1000,
            queue_max=settings.ingest_queue_max,
            shared_group=settings.ingest_shared_group,
            notify=settings.ingest_notify,
        )
        try:
            if start:
                consumer.start()
            yield IngestService(consumer, store, registry, url)
        finally:
            consumer.stop()
            store.close()
            registry.close()
