"""Readings, doses, posterior, forecast, alerts, recommendations and the audit log, with data
that arrives the way it does in production (devices over MQTT through ingest)."""

import sqlite3
import time

import pytest

from mipdstream.service.state_db import AlertRecord


@pytest.fixture(scope="module")
def monitored(api):
    """A team-A patient with a 1 g infusion at origin and four serum levels, all assimilated."""
    patient_id, origin = api.serum_patient()
    device_id = api.device_for(patient_id, origin)
    api.publish_dose(device_id, origin)
    api.publish_readings(device_id, [(origin + 3600 * h, c) for h, c in ((2, 22.0), (4, 17.5), (8, 12.0), (11, 8.5))])
    assert api.assimilated(patient_id, 11.0)
    return patient_id, origin, device_id


def test_readings_in_a_time_range(api, monitored):
    patient_id, origin, device_id = monitored
    with api.as_("ro-a") as reader:
        every = reader.get(f"/api/v1/patients/{patient_id}/readings").json()
        assert [r["value"] for r in every] == [22.0, 17.5, 12.0, 8.5]
        assert {r["device_id"] for r in every} == {device_id} and every[0]["unit"] == "mg/L"
        window = reader.get(f"/api/v1/patients/{patient_id}/readings", params={"start_s": origin + 3 * 3600,
                                                                                "end_s": origin + 9 * 3600}).json()
        assert [r["value"] for r in window] == [17.5, 12.0]
        assert reader.get(f"/api/v1/patients/{patient_id}/readings", params={"start_s": 10, "end_s": 5}).status_code == 422


def test_a_clinician_dose_joins_the_patients_timeline(api, monitored):
    patient_id, origin, _ = monitored
    given_at = origin + 12 * 3600
    with api.as_("clin-a") as clinician:
        added = clinician.post(f"/api/v1/patients/{patient_id}/doses", json={
            "amount_mg": 1000, "given_at": given_at, "duration_s": 3600, "drug": "vancomycin", "route": "iv_infusion"})
        assert added.status_code == 201 and added.json()["device_id"] == "clinician:clin-a"
        doses = clinician.get(f"/api/v1/patients/{patient_id}/doses").json()
        assert [d["amount_mg"] for d in doses] == [1000.0, 1000.0] and doses[1]["device_id"] == "clinician:clin-a"
        assert clinician.post(f"/api/v1/patients/{patient_id}/doses", json={
            "amount_mg": 1000, "drug": "vancomycin", "route": "iv_infusion"}).status_code == 422  # no duration
    assert api.assimilated(patient_id, 12.0)  # the assimilator took the dose at 12 h


def test_posterior_summary_has_ordered_quantiles_and_a_history(api, monitored):
    patient_id, origin, _ = monitored
    with api.as_("ro-a") as reader:
        posterior = reader.get(f"/api/v1/patients/{patient_id}/posterior").json()
    assert posterior["source"] == "posterior" and posterior["time_h"] >= 11.0
    assert posterior["levels"] == [0.05, 0.25, 0.5, 0.75, 0.95]
    for name, q in posterior["parameters"].items():
        assert q == sorted(q) and q[0] > 0, name
    assert len(posterior["history"]) >= 1 and posterior["history"][-1]["time_h"] >= 11.0
    new_patient, _ = api.serum_patient()
    with api.as_("ro-a") as reader:
        prior = reader.get(f"/api/v1/patients/{new_patient}/posterior").json()
    assert prior["source"] == "prior" and prior["time_h"] is None
    # Four levels (22 mg/L at 2 h after 1 g over 1 h) pull V1 below its prior median (58.4 L at
    # 70 kg) and narrow it. Reference, importance sampling with 400k prior draws: V1 median 39 L,
    # 90 % interval 25.8-56.5 L (ratio 2.2 vs 3.6 a priori). Clearance is barely identified by
    # these levels (CL 90 % interval 1.7-4.5 L/h vs 2.0-5.9 a priori), so it is not asserted on.
    v1, v1_prior = posterior["parameters"]["V1"], prior["parameters"]["V1"]
    assert v1[2] < 50.0 < v1_prior[2]
    assert v1[4] / v1[0] < v1_prior[4] / v1_prior[0]


def test_forecast_bands_under_current_and_recommended_regimen(api, monitored):
    patient_id, origin, _ = monitored
    now = time.time()
    with api.as_("clin-a") as clinician:
        clinician.put(f"/api/v1/patients/{patient_id}/regimen",
                      json={"amount_mg": 500, "interval_h": 12, "duration_h": 1, "start_s": now}).raise_for_status()
        api.recommendation(patient_id, amount_mg=2000, interval_h=12)
        forecast = clinician.get(f"/api/v1/patients/{patient_id}/forecast", params={"horizon_h": 36, "points": 37}).json()
    assert forecast["analyte"] == "serum" and forecast["unit"] == "mg/L" and len(forecast["times_h"]) == 37
    assert forecast["level_band"] == {"low": 10.0, "high": 20.0, "unit": "mg/L"}  # a team range of the level (a user model)
    assert forecast["target"]["quantity"] == "level" and forecast["target"]["source"] == "team"
    current, recommended = forecast["forecasts"]
    assert current["label"] == "current" and current["regimen"]["amount_mg"] == 500
    assert recommended["label"] == "recommended" and recommended["regimen"]["amount_mg"] == 2000
    for band in (current["band"], recommended["band"]):
        for i in range(37):
            assert band["p05"][i] <= band["p25"][i] <= band["p50"][i] <= band["p75"][i] <= band["p95"][i]
    assert recommended["band"]["p50"][-1] > 2 * current["band"]["p50"][-1]  # 4x the dose: far higher levels


def test_alerts_list_filter_and_acknowledge(api, monitored):
    patient_id, _, _ = monitored
    api.live.db.add_alerts([
        AlertRecord(f"{patient_id}-low", patient_id, "out_of_range", "warning", time.time() - 60, 11.0, "likely below target"),
        AlertRecord(f"{patient_id}-stale", patient_id, "stale", "info", time.time(), 11.0, "no reading for 6 h"),
    ])
    with api.as_("clin-a") as clinician:
        mine = clinician.get(f"/api/v1/patients/{patient_id}/alerts").json()
        assert [a["alert_id"] for a in mine] == [f"{patient_id}-stale", f"{patient_id}-low"]
        warnings = clinician.get("/api/v1/alerts", params={"severity": "warning", "status": "open"}).json()
        assert f"{patient_id}-low" in [a["alert_id"] for a in warnings] and all(a["severity"] == "warning" for a in warnings)
        acked = clinician.post(f"/api/v1/alerts/{patient_id}-low/acknowledge")
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_by"] == "clin-a"
        assert clinician.post(f"/api/v1/alerts/{patient_id}-low/acknowledge").status_code == 409
        open_ = clinician.get(f"/api/v1/patients/{patient_id}/alerts", params={"status": "open"}).json()
        assert [a["alert_id"] for a in open_] == [f"{patient_id}-stale"]
    with api.as_("ro-a") as reader:
        assert reader.post(f"/api/v1/alerts/{patient_id}-stale/acknowledge").status_code == 403


def test_accepting_a_recommendation_changes_the_regimen_and_is_audited_with_its_hash(api, monitored):
    patient_id, _, _ = monitored
    accepted, rejected = api.recommendation(patient_id, 1250, 8), api.recommendation(patient_id, 750, 24)
    with api.as_("clin-a") as clinician:
        assert clinician.post(f"/api/v1/recommendations/{accepted.recommendation_id}/decision",
                              json={"decision": "accept"}).status_code == 422  # a reason is required
        decided = clinician.post(f"/api/v1/recommendations/{accepted.recommendation_id}/decision",
                                 json={"decision": "accept", "reason": "level trending low"})
        assert decided.status_code == 200 and decided.json()["status"] == "accepted"
        regimen = clinician.get(f"/api/v1/patients/{patient_id}/regimen").json()
        assert regimen["current"]["amount_mg"] == 1250 and regimen["current"]["interval_h"] == 8
        assert regimen["current"]["recommendation_id"] == accepted.recommendation_id
        assert clinician.post(f"/api/v1/recommendations/{rejected.recommendation_id}/decision",
                              json={"decision": "reject", "reason": "renal function improving"}).json()["status"] == "rejected"
        assert clinician.get(f"/api/v1/patients/{patient_id}/regimen").json()["current"]["amount_mg"] == 1250
        again = clinician.post(f"/api/v1/recommendations/{accepted.recommendation_id}/decision",
                               json={"decision": "reject", "reason": "changed my mind"})
        assert again.status_code == 409 and "it was already accepted" in again.json()["detail"]
        statuses = {r["recommendation_id"]: r["status"] for r in clinician.get(f"/api/v1/patients/{patient_id}/recommendations").json()}
        assert statuses[accepted.recommendation_id] == "accepted" and statuses[rejected.recommendation_id] == "rejected"
        team_accepted = [r["recommendation_id"] for r in clinician.get("/api/v1/recommendations", params={"status": "accepted"}).json()]
        assert accepted.recommendation_id in team_accepted and rejected.recommendation_id not in team_accepted
        log = clinician.get("/api/v1/audit", params={"patient_id": patient_id}).json()
    decisions = [e for e in log if e["action"].endswith("-recommendation")]
    assert [(e["action"], e["recommendation_hash"], e["actor"]) for e in decisions] == [
        ("reject-recommendation", rejected.hash, "clin-a"), ("accept-recommendation", accepted.hash, "clin-a")]
    assert len(accepted.hash) == 64 and decisions[1]["detail"]["reason"] == "level trending low"


def test_every_read_of_patient_data_is_audited_and_the_log_is_append_only(api, monitored):
    patient_id, _, _ = monitored
    with api.as_("ro-a") as reader:
        reader.get(f"/api/v1/patients/{patient_id}/readings", params={"start_s": 0})
        reader.get(f"/api/v1/patients/{patient_id}/fhir")
    with api.as_("admin-a") as admin:
        log = admin.get("/api/v1/audit", params={"patient_id": patient_id, "limit": 1000}).json()
    reads = [(e["actor"], e["resource"]) for e in log if e["action"] == "read"]
    assert ("ro-a", f"GET /api/v1/patients/{patient_id}/readings?start_s=0") in reads
    assert ("ro-a", f"GET /api/v1/patients/{patient_id}/fhir") in reads
    connection = sqlite3.connect(api.live.settings.service_db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE audit SET actor = 'someone else'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM audit")
    connection.close()


def test_triage_ranks_by_risk_with_alerts_and_time_since_last_reading(api, monitored):
    patient_id, origin, _ = monitored
    quiet, _ = api.serum_patient(target=(0.0, 1000.0))  # prior, no drug: always in this range
    with api.as_("ro-a") as reader:
        rows = reader.get("/api/v1/triage").json()
    by_id = {r["patient_id"]: r for r in rows}
    assert by_id[quiet]["risk"] == 0.0 and by_id[quiet]["last_reading_at"] is None
    assert by_id[patient_id]["seconds_since_last_reading"] == pytest.approx(time.time() - (origin + 11 * 3600), abs=120)
    risks = [r["risk"] for r in rows if r["risk"] is not None]
    assert risks == sorted(risks, reverse=True)


def test_next_sample_suggestion_for_a_drug_with_a_dosing_policy(api):
    patient_id = "vanco-next"
    with api.as_("clin-a") as clinician:
        clinician.post("/api/v1/patients", json={"patient_id": patient_id, "model": "vancomycin",
                                                 "covariates": {"CRCL": 90, "WT": 80, "DIAL": 0}}).raise_for_status()
        none_yet = clinician.get(f"/api/v1/patients/{patient_id}/next-sample").json()  # no regimen, no doses
        assert none_yet["available"] is False and "no regimen" in none_yet["reason"]
        clinician.put(f"/api/v1/patients/{patient_id}/regimen",
                      json={"amount_mg": 1000, "interval_h": 12, "duration_h": 1}).raise_for_status()
        suggestion = clinician.get(f"/api/v1/patients/{patient_id}/next-sample")
    assert suggestion.status_code == 200, suggestion.text
    body = suggestion.json()
    assert body["available"] and body["metric"] == "auc24" and 0.5 <= body["time_h"] <= 24.0 and 0 < body["variance_reduction"] <= 1
    assert body["regimen"].startswith("1000 mg q12h")


def test_no_next_sample_without_a_dosing_policy(api, monitored):
    patient_id, _, _ = monitored  # the serum test model declares no drug
    with api.as_("clin-a") as clinician:
        response = clinician.get(f"/api/v1/patients/{patient_id}/next-sample")
    assert response.status_code == 200 and not response.json()["available"] and "no dosing policy" in response.json()["reason"]
