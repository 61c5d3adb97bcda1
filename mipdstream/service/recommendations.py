"""Recommendations from the dosing policy's alerts: a raised ``recommendation_available``
alert becomes an open :class:`RecommendationRecord` (its regimen, rationale and provenance);
an older open recommendation of the same patient is superseded by it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from mipdstream.service.state_db import AlertRecord, RecommendationRecord, ServiceDB

RECOMMENDATION_KIND = "recommendation_available"
# dosing_policy.Regimen.describe(): "[load L mg over D h, then ]A mg qIh over D h[ from +S h]"
DESCRIBED = re.compile(r"(?P<amount>[\d.e+-]+) mg q(?P<interval>[\d.e+-]+)h over (?P<duration>[\d.e+-]+) h(?: from \+(?P<start>[\d.e+-]+) h)?$")


def regimen_of(details: dict) -> tuple[float, float, float, float] | None:
    """(amount mg, interval h, duration h, start offset h) of the recommended regimen, or None."""
    structured = details.get("regimen")
    if isinstance(structured, dict) and {"amount", "interval"} <= structured.keys():
        return (float(structured["amount"]), float(structured["interval"]), float(structured.get("duration", 0.0)),
                float(structured.get("start", 0.0)))
    match = DESCRIBED.search(str(details.get("recommended", "")))
    if match is None:
        return None
    return (float(match["amount"]), float(match["interval"]), float(match["duration"]), float(match["start"] or 0.0))


def recommendation_sink(db: ServiceDB, published: Callable[[RecommendationRecord], None]) -> Callable[[list[AlertRecord]], None]:
    def sink(alerts: list[AlertRecord]) -> None:
        for alert in alerts:
            if alert.kind != RECOMMENDATION_KIND or alert.status != "open" or db.recommendation(alert.alert_id) is not None:
                continue
            patient, regimen = db.patient(alert.patient_id), regimen_of(alert.details)
            if patient is None or regimen is None:
                continue
            amount, interval, duration, start_h = regimen
            now = time.time()
            for older in db.recommendations(alert.patient_id, status="open"):
                db.decide_recommendation(older.recommendation_id, "superseded", "policy", "a newer recommendation", now)
            record = db.add_recommendation(RecommendationRecord(
                alert.alert_id, alert.patient_id, now, amount, interval, duration,
                patient.origin_s + 3600 * (alert.time_h + start_h), alert.message, details=alert.details,
            ))
            published(record)

    return sink
