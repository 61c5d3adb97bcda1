"""Posterior summaries after each update, and the sink that writes them (and alerts) to
InfluxDB for Grafana: measurements ``posterior`` and ``alert``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from influxdb_client import Point, WritePrecision

from assimilation.online import Posterior, predict
from mipdstream.service.state_db import AlertRecord, PatientRecord

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


class PosteriorSummary(NamedTuple):
    """Quantiles of the true (noise-free) value of one analyte at the posterior's time."""

    patient_id: str
    analyte: str  # wire code, or the model's analyte name when it has no code
    time_h: float
    epoch_s: float
    quantiles: tuple[float, ...]  # at LEVELS


def summarise(batch: Posterior, patients: list[PatientRecord], times_h: list[float]) -> list[PosteriorSummary]:
    """One summary per patient and analyte, from one vmapped prediction per analyte."""
    times = np.asarray(times_h, np.float64)[:, None]
    summaries = []
    for index, analyte in enumerate(batch.model.analytes):
        forecast = predict(batch, times, analyte=index, levels=LEVELS)
        quantiles = np.asarray(forecast.quantiles).reshape(len(patients), -1, len(LEVELS))[:, 0, :]
        for patient, t, q in zip(patients, times_h, quantiles):
            summaries.append(PosteriorSummary(
                patient.patient_id, analyte.code or analyte.name, t, patient.origin_s + 3600 * t, tuple(map(float, q))
            ))
    return summaries


def posterior_line(summary: PosteriorSummary) -> str:
    point = Point("posterior").tag("patient_id", summary.patient_id).tag("analyte", summary.analyte)
    for level, value in zip(LEVELS, summary.quantiles):
        point = point.field(f"q{round(level * 100):02d}", value)
    return point.time(int(summary.epoch_s * 1e9), WritePrecision.NS).to_line_protocol()


def alert_line(alert: AlertRecord) -> str:
    return (
        Point("alert").tag("patient_id", alert.patient_id).tag("kind", alert.kind).tag("severity", alert.severity)
        .field("alert_id", alert.alert_id).field("message", alert.message).field("revised", alert.revised)
        .time(int(alert.raised_at * 1e9), WritePrecision.NS).to_line_protocol()
    )


class InfluxDerivedWriter:
    """Sink for summaries and alerts into the InfluxDB store (same spool and durability)."""

    def __init__(self, store):
        self._store = store

    def summaries(self, summaries: list[PosteriorSummary]) -> None:
        self._store.write_lines([posterior_line(s) for s in summaries if np.all(np.isfinite(s.quantiles))])

    def alerts(self, alerts: list[AlertRecord]) -> None:
        self._store.write_lines([alert_line(a) for a in alerts])
