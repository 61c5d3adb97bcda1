"""The dosing policy's recommendation alerts become open recommendations the API can decide."""

import time

from dosing_policy import Regimen
from mipdstream.service import regimens
from mipdstream.service.recommendations import recommendation_sink
from mipdstream.service.state_db import AlertRecord


def policy_alert(patient_id: str, alert_id: str, recommended: Regimen, time_h: float = 6.0) -> AlertRecord:
    """Shaped like PolicyEvaluator's records (dosing_policy.alerts numbers, the typed regimen, provenance)."""
    details = {"status": "raised", "subject": "patient", "metric": "AUC24", "pta": 0.3, "recommended": recommended.describe(),
               "recommended_pta": 0.8, "gain": 0.4, "regimen": regimens.to_details(recommended),
               "provenance": {"model_hash": "ab" * 32, "data_hash": "cd" * 32}}
    return AlertRecord(alert_id, patient_id, "recommendation_available", "info", time.time(), time_h,
                       f"Suggested: {recommended.describe()}", details)


def test_the_recommended_regimen_travels_typed_loading_dose_included():
    loaded = Regimen(1000.0, 8.0, 1.0, 0.0, loading_amount=2500.0, loading_duration=4.5)
    assert regimens.from_details({"regimen": regimens.to_details(loaded)}) == loaded
    assert regimens.from_details({"regimen": {"amount": 750, "interval": 24}}) == Regimen(750.0, 24.0)
    assert regimens.from_details({"recommended": "1250 mg q12h over 1.5 h"}) is None  # text is not parsed back


def test_a_recommendation_alert_opens_a_recommendation_and_supersedes_the_older_one(api):
    patient_id, origin = api.serum_patient()
    published = []
    sink = recommendation_sink(api.live.db, published.append)
    sink([policy_alert(patient_id, "a1", Regimen(1000.0, 12.0, 1.0))])
    sink([policy_alert(patient_id, "a1", Regimen(1000.0, 12.0, 1.0))])  # the same alert again: no duplicate
    sink([policy_alert(patient_id, "a2", Regimen(1500.0, 12.0, 1.5, loading_amount=2500.0, loading_duration=4.5), time_h=18.0)])
    assert [r.recommendation_id for r in published] == ["a1", "a2"]
    with api.as_("clin-a") as clinician:
        recs = {r["recommendation_id"]: r for r in clinician.get(f"/api/v1/patients/{patient_id}/recommendations").json()}
    assert recs["a1"]["status"] == "superseded" and recs["a2"]["status"] == "open"
    assert recs["a2"]["regimen"]["amount_mg"] == 1500 and recs["a2"]["regimen"]["duration_h"] == 1.5
    assert recs["a2"]["regimen"]["start_s"] == origin + 18 * 3600
    assert recs["a2"]["regimen"]["loading_amount_mg"] == 2500 and recs["a2"]["regimen"]["loading_duration_h"] == 4.5
    assert recs["a2"]["regimen"]["description"] == "load 2500 mg over 4.5 h, then 1500 mg q12h over 1.5 h"
    with api.as_("clin-a") as clinician:
        stale = clinician.post("/api/v1/recommendations/a1/decision", json={"decision": "accept", "reason": "agree"})
        assert stale.status_code == 409 and "a newer recommendation replaced it" in stale.json()["detail"]
        clinician.post("/api/v1/recommendations/a2/decision", json={"decision": "accept", "reason": "agree"}).raise_for_status()
        current = clinician.get(f"/api/v1/patients/{patient_id}/regimen").json()["current"]
    assert current["loading_amount_mg"] == 2500 and current["recommendation_id"] == "a2"
    assert recs["a2"]["details"]["provenance"]["data_hash"] == "cd" * 32 and len(recs["a2"]["hash"]) == 64


def test_a_cleared_recommendation_alert_withdraws_the_open_recommendation(api):
    """The policy stops recommending (the current regimen is now about as good): the proposal it
    made is withdrawn, so a clinician cannot accept a stale one; a later alert opens a new one."""
    patient_id, _ = api.serum_patient()
    sink = recommendation_sink(api.live.db, lambda rec: None)
    sink([policy_alert(patient_id, "b1", Regimen(1000.0, 12.0, 1.0))])
    cleared = policy_alert(patient_id, "b1-cleared", Regimen(1000.0, 12.0, 1.0), time_h=30.0)
    sink([AlertRecord(cleared.alert_id, patient_id, cleared.kind, "info", time.time(), 30.0,
                      "The current regimen is now about as good as the suggestion.", cleared.details, status="cleared")])
    with api.as_("clin-a") as clinician:
        recs = {r["recommendation_id"]: r for r in clinician.get(f"/api/v1/patients/{patient_id}/recommendations").json()}
        assert recs["b1"]["status"] == "withdrawn" and "b1-cleared" not in recs  # a cleared alert opens nothing
        refused = clinician.post("/api/v1/recommendations/b1/decision", json={"decision": "accept", "reason": "agree"})
        assert refused.status_code == 409 and "the dosing policy withdrew it" in refused.json()["detail"]
        current = clinician.get(f"/api/v1/patients/{patient_id}/regimen").json()["current"] or {}
        assert current.get("recommendation_id") != "b1"
    sink([policy_alert(patient_id, "b2", Regimen(1500.0, 12.0, 1.5), time_h=48.0)])
    with api.as_("clin-a") as clinician:
        statuses = {r["recommendation_id"]: r["status"] for r in clinician.get(f"/api/v1/patients/{patient_id}/recommendations").json()}
    assert statuses == {"b1": "withdrawn", "b2": "open"}
