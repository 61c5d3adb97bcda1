"""One live service per test module (embedded broker, few particles, HTTP on a free port),
two care teams and a device vendor, and helpers to publish device readings over MQTT."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mipdstream.config import Settings
from mipdstream.service.live import LiveService, live_service
from mipdstream.service.state_db import PatientRecord, RecommendationRecord, TargetRecord
from tests.publishing import AckedPublisher, reading, wait_until
from wire.topics import TopicKind, device_topic

SERUM_MODEL = str(Path(__file__).resolve().parents[1] / "service" / "models" / "serum_vancomycin.py")
COVARIATES = {"CRCL": 100.0, "WT": 70.0}
PASSWORD = "correct horse battery"
USERS = {  # username: (role, team, vendor)
    "admin-a": ("team-admin", "team-a", None),
    "clin-a": ("clinician", "team-a", None),
    "ro-a": ("read-only", "team-a", None),
    "clin-b": ("clinician", "team-b", None),
    "admin-b": ("team-admin", "team-b", None),
    "vendor-x": ("device-vendor", None, "acme"),
}


@dataclass
class Api:
    live: LiveService
    tokens: dict[str, str]

    def client(self, username: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[username]}"} if username else {}
        return httpx.Client(base_url=self.live.http_url, headers=headers, timeout=60)

    def as_(self, username: str) -> httpx.Client:
        return self.client(username)

    def serum_patient(self, team: str = "team-a", target: tuple[float, float] | None = (10.0, 20.0)) -> tuple[str, float]:
        """A patient on the serum-vancomycin test model (its analyte code 20578-1 matches device readings)."""
        patient_id = f"p-{uuid.uuid4().hex[:8]}"
        origin = float(int(time.time()) - 12 * 3600)
        self.live.db.add_patient(PatientRecord(patient_id, SERUM_MODEL, COVARIATES, origin, team))
        if target:
            self.live.db.set_target(TargetRecord(patient_id, *target, "mg/L"))
        return patient_id, origin

    def device_for(self, patient_id: str, since: float, vendor: str | None = "acme") -> str:
        device_id = f"poc-{uuid.uuid4().hex[:8]}"
        self.live.ingest.registry.register_device(device_id, "poc-meter", vendor)
        self.live.ingest.registry.enroll(device_id, patient_id, since - 60)
        return device_id

    def publish_readings(self, device_id: str, points: list[tuple[float, float]]) -> None:
        """(epoch s, mg/L) readings published over MQTT like a device; returns once the broker acked them."""
        publisher = AckedPublisher(self.live.ingest.url, f"dev-{uuid.uuid4().hex[:6]}", protocol="3.1.1")
        for seq, (t, value) in enumerate(points):
            body = reading(device_id, seq, t, value, reading_id=f"{device_id}-r{seq}-{int(t)}")
            publisher.publish(device_topic(device_id, TopicKind.READING), body["id"], json.dumps(body))
        publisher.close()

    def publish_dose(self, device_id: str, t: float, grams: float = 1.0) -> None:
        publisher = AckedPublisher(self.live.ingest.url, f"pump-{uuid.uuid4().hex[:6]}", protocol="3.1.1")
        body = {"id": f"d-{uuid.uuid4().hex[:6]}", "seq": 1, "t": t, "drug": "vancomycin", "amt": grams, "u": "g",
                "route": "iv_infusion", "dur": 3600.0}
        publisher.publish(device_topic(device_id, TopicKind.DOSE), body["id"], json.dumps(body))
        publisher.close()

    def assimilated_patient(self, levels: tuple[float, float] = (21.0, 15.5)) -> str:
        """A serum patient with a 1 g dose at time zero and two levels (mg/L, at 2 h and 4 h),
        assimilated up to 4 h, and an open recommendation."""
        patient_id, origin = self.serum_patient()
        device_id = self.device_for(patient_id, origin)
        self.publish_dose(device_id, origin)
        self.publish_readings(device_id, [(origin + 7200, levels[0]), (origin + 4 * 3600, levels[1])])
        assert self.assimilated(patient_id, 4.0)
        self.recommendation(patient_id)
        return patient_id

    def assimilated(self, patient_id: str, time_h: float, timeout: float = 90) -> bool:
        def done():
            found = self.live.assimilator.posterior(patient_id)
            return found is not None and found[1] >= time_h - 1e-6
        return wait_until(done, timeout=timeout)

    def recommendation(self, patient_id: str, amount_mg: float = 1500.0, interval_h: float = 12.0) -> RecommendationRecord:
        return self.live.db.add_recommendation(RecommendationRecord(
            f"rec-{uuid.uuid4().hex[:8]}", patient_id, time.time(), amount_mg, interval_h, 1.0, time.time() + 3600,
            f"{amount_mg:g} mg q{interval_h:g}h: PTA 0.82 vs 0.41 now", details={"pta": 0.82, "current_pta": 0.41},
        ))


def settings_for(tmp: Path, **overrides) -> Settings:
    values = dict(data_dir=tmp, broker_url="embedded", embedded_broker_port=0, http_port=0, filter_particles=512,
                  reorder_window_s=0.05, assimilation_batch_window_ms=20, checkpoint_interval_s=5, publish_alerts=False,
                  api_sse_keepalive_s=0.5)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with live_service(settings_for(tmp_path_factory.mktemp("api"))) as live:
        tokens = {}
        for username, (role, team, vendor) in USERS.items():
            live.db.add_user(username, PASSWORD if username == "clin-a" else None, role, team, vendor)
            tokens[username] = live.db.issue_credential(username, "session", ttl_s=3600)
        yield Api(live, tokens)
