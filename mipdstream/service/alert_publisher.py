"""Alerts to care-team consumers over MQTT: ``mipd/v1/team/{team}/alert``, QoS 1, JSON."""

from __future__ import annotations

import dataclasses
import json
import logging

from ingest.mqtt import connect
from mipdstream.service.state_db import AlertRecord, ServiceDB
from wire.topics import team_alert_topic

log = logging.getLogger(__name__)


def alert_payload(alert: AlertRecord) -> bytes:
    return json.dumps(dataclasses.asdict(alert), sort_keys=True, default=float).encode()


class AlertPublisher:
    """An alert sink. paho queues while the broker is away; the alert is stored first anyway."""

    def __init__(self, url: str, db: ServiceDB, client_id: str = "mipd-alerts", protocol: str = "auto"):
        self._db = db
        self._client, _ = connect(url, client_id, protocol=protocol)

    def __call__(self, alerts: list[AlertRecord]) -> None:
        for alert in alerts:
            patient = self._db.patient(alert.patient_id)
            team = patient.team if patient is not None else "default"
            result = self._client.publish(team_alert_topic(team), alert_payload(alert), qos=1)
            if result.rc != 0:
                log.warning("alert %s not queued for MQTT (rc=%s); it is stored", alert.alert_id, result.rc)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
