"""The dosing policy's recommendation alerts become open recommendations the API can decide."""

import time

from mipdstream.service.recommendations import recommendation_sink, regimen_of
from mipdstream.service.state_db import AlertRecord


def policy_alert(patient_id: str, alert_id: str, recommended: str, time_h: float = 6.0) -> AlertRecord:
    """Shaped like PolicyEvaluator's records (dosing_policy.alerts numbers + provenance)."""
    details = {"status": "raised", "subject": "patient", "metric": "AUC24", "pta": 0.3, "recommended": recommended,
               "recommended_pta": 0.8, "gain": 0.4, "provenance": {"model_hash": "ab" * 32, "data_hash": "cd" * 32}}
    return AlertRecord(alert_id, patient_id, "recommendation_available", "info", time.time(), time_h,
                       f"Suggested: {recommended}", details)


def test_regimen_descriptions_are_read_back():
    assert regimen_of({"recommended": "1250 mg q12h over 1.5 h"}) == (1250.0, 12.0, 1.5, 0.0)
    assert regimen_of({"recommended": "load 2000 mg over 2 h, then 1000 mg q8h over 1 h from +3 h"}) == (1000.0, 8.0, 1.0, 3.0)
    assert regimen_of({"regimen": {"amount": 750, "interval": 24}}) == (750.0, 24.0, 0.0, 0.0)
    assert regimen_of({"recommended": "something else"}) is None


def test_a_recommendation_alert_opens_a_recommendation_and_supersedes_the_older_one(api):
    patient_id, origin = api.serum_patient()
    published = []
    sink = recommendation_sink(api.live.db, published.append)
    sink([policy_alert(patient_id, "a1", "1000 mg q12h over 1 h")])
    sink([policy_alert(patient_id, "a1", "1000 mg q12h over 1 h")])  # the same alert again: no duplicate
    sink([policy_alert(patient_id, "a2", "1500 mg q12h over 1.5 h", time_h=18.0)])
    assert [r.recommendation_id for r in published] == ["a1", "a2"]
    with api.as_("clin-a") as clinician:
        recs = {r["recommendation_id"]: r for r in clinician.get(f"/api/v1/patients/{patient_id}/recommendations").json()}
    assert recs["a1"]["status"] == "superseded" and recs["a2"]["status"] == "open"
    assert recs["a2"]["regimen"]["amount_mg"] == 1500 and recs["a2"]["regimen"]["duration_h"] == 1.5
    assert recs["a2"]["regimen"]["start_s"] == origin + 18 * 3600
    assert recs["a2"]["details"]["provenance"]["data_hash"] == "cd" * 32 and len(recs["a2"]["hash"]) == 64
