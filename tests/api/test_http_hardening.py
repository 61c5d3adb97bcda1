"""Security headers on every response (each operation of the OpenAPI schema, the dashboard's
pages and files, errors up to 500), HSTS and the session cookie's Secure flag only over TLS
(or behind a declared TLS proxy), the request body limit (413 problem), and the favicon."""

from __future__ import annotations

import re
import sqlite3

import pytest
from fastapi.testclient import TestClient

from mipdstream.api import create_app
from mipdstream.api.auth import SESSION_COOKIE
from tests.api.conftest import PASSWORD

EXPECTED = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
CSP_DIRECTIVES = {"default-src": "'self'", "script-src": "'self'", "img-src": "'self' data:", "connect-src": "'self'",
                  "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'self'", "object-src": "'none'"}


class Configured:
    """The running service with some settings changed (an app of its own over the same state)."""

    def __init__(self, live, **settings):
        self._live, self.settings = live, live.settings.model_copy(update=settings)

    def __getattr__(self, name):
        return getattr(self._live, name)


def client(api, base_url: str = "http://testserver", **settings) -> TestClient:
    live = Configured(api.live, **settings) if settings else api.live
    return TestClient(create_app(live), base_url=base_url, raise_server_exceptions=False)


def assert_hardened(response, tls: bool = False) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (where, name, response.headers.get(name))
    policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    for directive, value in CSP_DIRECTIVES.items():
        assert policy.get(directive) == value, (where, directive, policy.get(directive))
    assert "'unsafe-inline'" not in policy["style-src"] and "'unsafe-eval'" not in policy["script-src"], where
    assert all(re.fullmatch(r"'self'|'sha256-[A-Za-z0-9+/]{43}='", s) for s in policy["style-src"].split()), where
    assert ("strict-transport-security" in response.headers) == tls, where


@pytest.fixture(scope="module")
def token(api):
    """A token of its own: the sweep calls logout, which revokes the token it presents."""
    return api.live.db.issue_credential("admin-a", "session", ttl_s=3600)


def operations(schema: dict) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in schema["paths"].items() for method in ops]


def test_every_schema_operation_carries_the_headers(api, token):
    patient_id, _ = api.serum_patient()
    with client(api) as http:
        schema = http.get("/openapi.json").json()
        assert len(operations(schema)) >= 30
        for method, path in operations(schema):
            url = re.sub(r"\{patient_id\}", patient_id, path)
            url = re.sub(r"\{[^}]+\}", "x", url)
            for headers in ({}, {"Authorization": f"Bearer {token}"}):
                if path == "/api/v1/events":  # an endless stream: the headers come with its first line
                    with http.stream(method, url, headers=headers) as response:
                        assert_hardened(response)
                    continue
                assert_hardened(http.request(method, url, headers=headers, json={}))


def test_pages_static_files_and_errors_carry_the_headers(api, monkeypatch):
    patient_id, _ = api.serum_patient()
    pages = ["/", "/dashboard", "/dashboard/", "/dashboard/login", "/dashboard/audit", f"/dashboard/patients/{patient_id}",
             "/dashboard/static/app.css", "/dashboard/static/app.js", "/dashboard/static/plotly.min.js", "/favicon.ico",
             "/openapi.json", "/dashboard/static/nothing.js", "/no-such-page"]
    with client(api) as http:
        for path in pages:
            assert_hardened(http.get(path, follow_redirects=False))
        assert_hardened(http.delete("/dashboard/login"))  # 405
        assert_hardened(http.post("/api/v1/auth/token", json={"username": ""}))  # 422

        def broken(*args, **kwargs):
            raise sqlite3.OperationalError("broken on purpose")

        monkeypatch.setattr(api.live.ingest.store, "readings", broken)
        failed = http.get(f"/api/v1/patients/{patient_id}/readings", headers={"Authorization": f"Bearer {api.tokens['clin-a']}"})
        assert failed.status_code == 500  # sent by Starlette's ServerErrorMiddleware, outermost but for ours
        assert_hardened(failed)


def test_hsts_and_a_secure_cookie_only_over_tls_or_behind_a_declared_tls_proxy(api):
    login = {"username": "clin-a", "password": PASSWORD}
    for base_url, settings, tls in (("http://testserver", {}, False), ("https://testserver", {}, True),
                                    ("http://testserver", {"api_behind_tls_proxy": True}, True)):
        with client(api, base_url, **settings) as http:
            response = http.post("/api/v1/auth/token", json=login)
            assert response.status_code == 200
            assert_hardened(response, tls=tls)
            cookie = response.headers["set-cookie"]
            attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
            assert cookie.startswith(f"{SESSION_COOKIE}=") and "samesite=strict" in cookie.lower(), cookie
            assert "httponly" in attributes and ("secure" in attributes) == tls, (base_url, settings, cookie)
            assert_hardened(http.get("/favicon.ico"), tls=tls)


def test_an_oversized_body_is_a_413_problem_and_the_route_never_runs(api):
    limit = 4096
    token = api.live.db.issue_credential("clin-a", "session", ttl_s=600)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with client(api, api_max_body_bytes=limit) as http:
        declared = http.post("/api/v1/auth/logout", content=b" " * (limit + 1), headers=headers)
        assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"
        assert declared.json()["title"] == "Content too large" and str(limit) in declared.json()["detail"]
        assert_hardened(declared)
        assert api.live.db.user_for_secret(token) is not None  # logout did not run

        chunks = (b" " * 1024 for _ in range(8))  # no Content-Length: counted while read
        streamed = http.post("/api/v1/patients", content=chunks, headers=headers)
        assert streamed.status_code == 413 and streamed.headers["content-type"] == "application/problem+json"
        assert_hardened(streamed)

        within = http.post("/api/v1/patients", content=b'{"patient_id": "p"}'.ljust(limit), headers=headers)
        assert within.status_code == 422  # read and validated: not refused for its size
    with client(api) as http:  # the default limit, 1 MiB
        assert http.post("/api/v1/patients", content=b" " * (1024 * 1024 + 1), headers=headers).status_code == 413


def test_the_favicon_is_a_small_icon(api):
    with client(api) as http:
        response = http.get("/favicon.ico")
    assert response.status_code == 200 and response.headers["content-type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00" and 100 < len(response.content) < 10_000  # ICONDIR, type 1: icon


def test_a_signed_out_browser_is_sent_to_the_login_page_without_a_401(api):
    """The dashboard pages answer a missing or stale session with a redirect to the login page
    (and where to come back), so the browser never logs a failed request."""
    patient_id, _ = api.serum_patient()
    pages = ["/dashboard/", "/dashboard/audit", f"/dashboard/patients/{patient_id}"]
    with client(api) as http:
        for path in pages:
            response = http.get(path, follow_redirects=False)
            assert response.status_code == 303 and response.headers["location"] == f"/dashboard/login?next={path}"
        http.cookies.set(SESSION_COOKIE, "stale-token")
        assert http.get(pages[0], follow_redirects=False).status_code == 303
        assert http.post("/api/v1/auth/token", json={"username": "clin-a", "password": PASSWORD}).status_code == 200
        for path in pages:
            response = http.get(path, follow_redirects=False)
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/html"), path
        assert http.get("/dashboard/login", follow_redirects=False).status_code == 200
