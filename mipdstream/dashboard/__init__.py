"""The care-team dashboard: static pages that call the API with the session cookie and
update over the event stream. plotly.js comes from the installed ``plotly`` package (no CDN)."""

from __future__ import annotations

import functools
from pathlib import Path

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

HERE = Path(__file__).parent
STATIC = HERE / "static"
PAGES = {"login": "login.html", "triage": "triage.html", "patient": "patient.html", "audit": "audit.html"}
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


@functools.lru_cache(maxsize=1)
def plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / PAGES[name], media_type="text/html", headers={"Cache-Control": "no-store"})


def _signed_in_page(request: Request, name: str) -> Response:
    """The page for a valid session; otherwise a redirect to the login page, answered here so
    that a signed-out browser never sees (or logs) a 401 from the page's first API call."""
    from mipdstream.api.auth import SESSION_COOKIE, get_db

    secret = request.cookies.get(SESSION_COOKIE)
    if not secret or get_db(request).user_for_secret(secret) is None:
        return RedirectResponse(f"/dashboard/login?next={quote(request.url.path)}", status_code=303)
    return _page(name)


@router.get("")
def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/")
def triage_page(request: Request) -> Response:
    return _signed_in_page(request, "triage")


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login")


@router.get("/audit")
def audit_page(request: Request) -> Response:
    return _signed_in_page(request, "audit")


@router.get("/patients/{patient_id}")
def patient_page(request: Request, patient_id: str) -> Response:
    return _signed_in_page(request, "patient")


@router.get("/static/plotly.min.js")
def plotly() -> Response:
    return Response(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if path.suffix not in STATIC_TYPES or path.parent != STATIC or not path.is_file():
        from mipdstream.api.problems import ProblemError

        raise ProblemError(404, f"no static file {name!r}")
    return FileResponse(path, media_type=STATIC_TYPES[path.suffix])
