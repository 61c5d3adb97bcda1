"""The audit chain over the API: its head for anchoring (who may read it), and a decision
taken through the API recorded with its recommendation's model hash, data hash and seed."""

from __future__ import annotations

import time
import uuid

from mipdstream.service.state_db import RecommendationRecord

PROVENANCE = {"model_id": "serum", "model_hash": "1f" * 32, "data_hash": "2e" * 32, "filter_settings": "{}", "seed": 11}


def test_the_head_names_the_last_record_and_needs_a_team_or_read_only_account(api):
    with api.client() as anonymous:
        assert anonymous.get("/api/v1/audit/head").status_code == 401
    with api.as_("vendor-x") as vendor:
        assert vendor.get("/api/v1/audit/head").status_code == 403
    for username in ("ro-a", "clin-b"):
        with api.as_(username) as http:
            head = http.get("/api/v1/audit/head").json()
        stored = api.live.db.audit_head()
        assert head == {"seq": stored.seq, "hash": stored.hash, "count": stored.count} and len(head["hash"]) == 64


def test_a_decision_through_the_api_is_chained_with_its_recommendations_inputs(api):
    patient_id, _ = api.serum_patient()
    rec = api.live.db.add_recommendation(RecommendationRecord(
        f"rec-{uuid.uuid4().hex[:8]}", patient_id, time.time(), 1000.0, 12.0, 1.0, time.time() + 3600, "why",
        details={"pta": 0.8, "provenance": PROVENANCE}))
    with api.as_("clin-a") as clinician:
        decided = clinician.post(f"/api/v1/recommendations/{rec.recommendation_id}/decision",
                                 json={"decision": "accept", "reason": "trough low"})
        assert decided.status_code == 200
        head = clinician.get("/api/v1/audit/head").json()
        entries = clinician.get("/api/v1/audit", params={"patient_id": patient_id}).json()
    decision = next(e for e in entries if e["action"] == "accept-recommendation")
    assert (decision["model_hash"], decision["data_hash"], decision["seed"]) == ("1f" * 32, "2e" * 32, 11)
    assert decision["recommendation_hash"] == rec.hash and len(decision["hash"]) == 64
    assert decision["seq"] <= head["seq"]
    verification = api.live.db.verify_audit((head["seq"], head["hash"]))
    assert verification.ok, verification.broken
