"""The authorisation matrix: a team never sees another team's patient, by any route.

Every route of the OpenAPI schema with a ``{patient_id}`` is called, with every method,
as each user of team B for a patient of team A: all answer 404 (not 403: ids do not leak)
and nothing is changed. The list routes never include team A's data."""

import pytest

from tests.api.conftest import USERS

BODIES = {
    "/api/v1/patients/{patient_id}/covariates": {"covariates": {"CRCL": 1, "WT": 1}},
    "/api/v1/patients/{patient_id}/covariate-changes": {"at_s": 4.0e9, "values": {"CRCL": 30}},
    "/api/v1/patients/{patient_id}/target": {"low": 1, "high": 2, "unit": "mg/L"},
    "/api/v1/patients/{patient_id}/enrollments": {"device_id": "acme-iso"},
    "/api/v1/patients/{patient_id}/doses": {"amount_mg": 1000, "drug": "vancomycin", "route": "iv_infusion", "duration_s": 3600},
    "/api/v1/patients/{patient_id}/regimen": {"amount_mg": 1000, "interval_h": 12, "duration_h": 1},
}


def patient_routes(api):
    schema = api.client().get("/openapi.json").json()
    routes = [(method.upper(), path) for path, ops in schema["paths"].items() if "{patient_id}" in path for method in ops]
    assert len(routes) >= 15
    return routes


@pytest.fixture(scope="module")
def team_a_patient(api):
    patient_id, origin = api.serum_patient(team="team-a")
    api.live.ingest.registry.register_device("acme-iso", "poc-meter", "acme")
    api.recommendation(patient_id)
    return patient_id


@pytest.mark.parametrize("username", [u for u, (_, team, _) in USERS.items() if team == "team-b"])
def test_team_b_gets_404_for_team_a_patient_on_every_route(api, team_a_patient, username):
    before = api.live.db.patient(team_a_patient)
    with api.as_(username) as client:
        for method, path in patient_routes(api):
            url = path.replace("{patient_id}", team_a_patient)
            response = client.request(method, url, json=BODIES.get(path))
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert team_a_patient in response.json()["detail"] and response.json()["title"] == "Not found"
    assert api.live.db.patient(team_a_patient) == before
    assert api.live.db.regimen(team_a_patient) is None
    assert api.live.ingest.store.doses(team_a_patient) == []
    assert api.live.ingest.registry.enrollments(team_a_patient) == []


def test_vendor_is_refused_every_patient_route(api, team_a_patient):
    with api.as_("vendor-x") as client:
        for method, path in patient_routes(api):
            response = client.request(method, path.replace("{patient_id}", team_a_patient), json=BODIES.get(path))
            assert response.status_code == 403, (method, path)


def test_team_b_lists_and_decisions_exclude_team_a(api, team_a_patient):
    rec = api.live.db.recommendations(team_a_patient)[0]
    alert_id = f"alert-{team_a_patient}"
    from mipdstream.service.state_db import AlertRecord

    api.live.db.add_alerts([AlertRecord(alert_id, team_a_patient, "out_of_range", "warning", 1.7e9, 1.0, "low")])
    with api.as_("clin-b") as client:
        for path in ("/api/v1/patients", "/api/v1/alerts", "/api/v1/recommendations", "/api/v1/triage", "/api/v1/audit"):
            response = client.get(path)
            assert response.status_code == 200 and team_a_patient not in response.text, path
        decision = client.post(f"/api/v1/recommendations/{rec.recommendation_id}/decision", json={"decision": "accept", "reason": "x"})
        assert decision.status_code == 404
        assert client.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 404
    assert api.live.db.recommendation(rec.recommendation_id).status == "open"
    assert api.live.db.alert(alert_id).status == "open"
