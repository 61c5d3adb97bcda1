"""What the service exposes at ``/metrics`` (Prometheus text format, via prometheus-client)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServiceMetrics:
    """One registry per service instance (so tests can run several in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("mipd_assimilation_queue_depth", "Committed batches waiting for assimilation", registry=r)
        self.events = Counter("mipd_assimilation_events", "Events offered to patient timelines", ["outcome"], registry=r)
        self.assimilated = Counter(
            "mipd_assimilated_events", "Distinct events assimilated into posteriors (replays after late events not counted again)",
            registry=r)
        self.batch_size = Histogram(
            "mipd_assimilation_batch_patients", "Patients per vmapped update",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )
        self.update_seconds = Histogram(
            "mipd_assimilation_update_seconds", "Wall time of one batched update",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )
        self.rewinds = Counter("mipd_assimilation_rewinds", "Re-assimilations because of late events", ["kind"], registry=r)
        self.alerts = Counter("mipd_alerts", "Alerts raised", ["kind", "severity"], registry=r)
        self.checkpoints = Counter("mipd_checkpoints", "Posterior checkpoints written", registry=r)
        self.backpressure = Counter("mipd_backpressure_waits", "Times ingest waited for a full assimilation queue", registry=r)
        self.rejuvenations = Counter("mipd_rejuvenations", "Resample-move steps of particle-filter posteriors", registry=r)
        self.failures = Counter("mipd_assimilation_failures", "Failed updates or policy evaluations", registry=r)
