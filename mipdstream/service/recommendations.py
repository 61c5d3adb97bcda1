"""Recommendations from the dosing policy's alerts: a raised ``recommendation_available``
alert becomes an open :class:`RecommendationRecord` (its regimen, rationale and provenance);
an older open recommendation of the same patient is superseded by it. When the alert clears
(the current regimen is now about as good as any), the open recommendation is withdrawn: a
clinician is never asked to accept a proposal the policy no longer makes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from mipdstream.service import regimens
from mipdstream.service.state_db import AlertRecord, RecommendationRecord, ServiceDB

RECOMMENDATION_KIND = "recommendation_available"


def recommendation_sink(db: ServiceDB, published: Callable[[RecommendationRecord], None]) -> Callable[[list[AlertRecord]], None]:
    def sink(alerts: list[AlertRecord]) -> None:
        for alert in alerts:
            if alert.kind == RECOMMENDATION_KIND and alert.status == "cleared":
                for open_one in db.recommendations(alert.patient_id, status="open"):
                    db.decide_recommendation(open_one.recommendation_id, "withdrawn", "policy", alert.message, time.time())
                continue
            if alert.kind != RECOMMENDATION_KIND or alert.status != "open" or db.recommendation(alert.alert_id) is not None:
                continue
            patient, regimen = db.patient(alert.patient_id), regimens.from_details(alert.details)
            if patient is None or regimen is None:
                continue
            now = time.time()
            for older in db.recommendations(alert.patient_id, status="open"):
                db.decide_recommendation(older.recommendation_id, "superseded", "policy", "a newer recommendation", now)
            # the regimen's start is relative to the alert's time, the decision (the next dose)
            record = RecommendationRecord(alert.alert_id, alert.patient_id, now, 0.0, 0.0, 0.0, 0.0, alert.message,
                                          details=alert.details)
            record = db.add_recommendation(replace(record, **regimens.at_clock(patient, regimen, alert.time_h)))
            published(record)

    return sink
