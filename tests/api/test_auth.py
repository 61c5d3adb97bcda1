"""Authentication (bearer, API key, cookie), roles, problem documents."""

import sqlite3
import time

import httpx

from tests.api.conftest import PASSWORD


def test_login_issues_a_token_that_authenticates_and_logout_revokes_it(api):
    with api.client() as anonymous:
        login = anonymous.post("/api/v1/auth/token", json={"username": "clin-a", "password": PASSWORD})
        assert login.status_code == 200
        token = login.json()["access_token"]
        assert login.json()["user"] == {"username": "clin-a", "role": "clinician", "team": "team-a", "vendor": None}
        assert "mipd_session" in login.cookies
        me = anonymous.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["username"] == "clin-a"
        assert anonymous.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204
        assert anonymous.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_the_session_cookie_authenticates_the_browser(api):
    with httpx.Client(base_url=api.live.http_url) as browser:
        browser.post("/api/v1/auth/token", json={"username": "clin-a", "password": PASSWORD}).raise_for_status()
        assert browser.get("/api/v1/auth/me").json()["username"] == "clin-a"


def test_wrong_password_and_missing_credentials_are_401_problems(api):
    with api.client() as anonymous:
        wrong = anonymous.post("/api/v1/auth/token", json={"username": "clin-a", "password": "nope"})
        assert wrong.status_code == 401
        assert wrong.headers["content-type"] == "application/problem+json"
        assert wrong.json()["title"] == "Not authenticated" and wrong.json()["status"] == 401
        missing = anonymous.get("/api/v1/patients")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        forged = anonymous.get("/api/v1/patients", headers={"Authorization": "Bearer forged"})
        assert forged.status_code == 401


def test_api_keys_authenticate_and_only_admins_issue_them_for_others(api):
    with api.as_("admin-a") as admin:
        issued = admin.post("/api/v1/users/ro-a/api-keys")
        assert issued.status_code == 201
        key = issued.json()["api_key"]
        assert admin.post("/api/v1/users/clin-b/api-keys").status_code == 404  # another team's user
    with api.client() as anonymous:
        assert anonymous.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()["username"] == "ro-a"
    with api.as_("clin-a") as clinician:
        assert clinician.post("/api/v1/users/ro-a/api-keys").status_code == 404
        assert clinician.post("/api/v1/users/clin-a/api-keys").status_code == 201


def test_team_admin_manages_users_of_their_own_team_only(api):
    with api.as_("admin-a") as admin:
        created = admin.post("/api/v1/users", json={"username": "nurse-a", "password": "long enough pw", "role": "clinician"})
        assert created.status_code == 201 and created.json()["team"] == "team-a"
        assert "nurse-a" in [u["username"] for u in admin.get("/api/v1/users").json()]
        assert admin.post("/api/v1/users", json={"username": "clin-b", "role": "read-only"}).status_code == 409
        vendor = admin.post("/api/v1/users", json={"username": "v2", "role": "device-vendor"})
        assert vendor.status_code == 403 and api.live.db.user("v2") is None  # no access to a vendor's devices
    with api.as_("clin-a") as clinician:
        denied = clinician.post("/api/v1/users", json={"username": "x", "role": "team-admin"})
        assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"


def test_roles_read_only_cannot_write_and_vendors_cannot_read_patients(api):
    patient_id, _ = api.serum_patient()
    dose = {"amount_mg": 1000, "drug": "vancomycin", "route": "iv_infusion", "duration_s": 3600}
    with api.as_("ro-a") as reader:
        assert reader.get(f"/api/v1/patients/{patient_id}").status_code == 200
        assert reader.post(f"/api/v1/patients/{patient_id}/doses", json=dose).status_code == 403
        assert reader.get("/api/v1/audit").status_code == 403
    with api.as_("vendor-x") as vendor:
        assert vendor.get(f"/api/v1/patients/{patient_id}").status_code == 403
        assert vendor.get("/api/v1/patients").status_code == 403
        assert vendor.get("/api/v1/triage").status_code == 403


def test_validation_errors_are_422_problems_listing_the_fields(api):
    with api.as_("clin-a") as clinician:
        bad = clinician.post("/api/v1/patients", json={"patient_id": "has space", "model": "two_compartment_infusion"})
    assert bad.status_code == 422
    body = bad.json()
    assert body["status"] == 422 and ["body", "patient_id"] in [e["location"] for e in body["errors"]]


def test_unexpected_errors_are_500_problems_without_internals(api, monkeypatch):
    patient_id, _ = api.serum_patient()

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("secret table layout /var/lib/mipd")

    monkeypatch.setattr(api.live.ingest.store, "readings", broken)
    with api.as_("clin-a") as clinician:
        response = clinician.get(f"/api/v1/patients/{patient_id}/readings")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret" not in response.text and "Traceback" not in response.text and "sqlite" not in response.text


def test_unknown_paths_are_404_problems(api):
    with api.client() as anonymous:
        response = anonymous.get("/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["instance"] == "/api/v1/nothing-here"


def test_repeated_failed_logins_are_throttled_per_user_and_per_client(api):
    """A second app on the same service, with a short window (3 failures in 2 s), so that the
    lockout does not outlive the test; TestClient calls come from the address "testclient"."""
    from fastapi.testclient import TestClient

    from mipdstream.api import create_app
    from mipdstream.api.login_guard import LoginGuard

    app = create_app(api.live)
    app.state.login_guard = LoginGuard(max_failures=3, window_s=2.0)
    api.live.db.add_user("guessed", PASSWORD, "read-only", "team-a", None)
    with TestClient(app) as client:
        login = lambda user, password: client.post("/api/v1/auth/token", json={"username": user, "password": password})
        assert [login("guessed", f"guess-{i}").status_code for i in range(3)] == [401, 401, 401]
        throttled = login("guessed", PASSWORD)  # even the right password, while locked out
        assert throttled.status_code == 429 and throttled.headers["content-type"] == "application/problem+json"
        assert 1 <= int(throttled.headers["retry-after"]) <= 2
        assert login("clin-a", PASSWORD).status_code == 429  # the same client, another name
        with TestClient(app, client=("10.0.0.9", 50000)) as elsewhere:
            other = lambda user: elsewhere.post("/api/v1/auth/token", json={"username": user, "password": PASSWORD})
            assert other("clin-a").status_code == 200  # another client, another name: not affected
            assert other("guessed").status_code == 429  # the guessed name is locked from everywhere
        time.sleep(2.2)
        assert login("guessed", PASSWORD).status_code == 200
