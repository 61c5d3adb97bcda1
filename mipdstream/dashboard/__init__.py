"""The care-team dashboard: static pages that call the API with the session cookie and
update over the event stream. plotly.js comes from the installed ``plotly`` package (no CDN)."""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter
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


@router.get("")
def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/")
def triage_page() -> FileResponse:
    return _page("triage")


@router.get("/login")
def login_page() -> FileResponse:
    return _page("login")


@router.get("/audit")
def audit_page() -> FileResponse:
    return _page("audit")


@router.get("/patients/{patient_id}")
def patient_page(patient_id: str) -> FileResponse:
    return _page("patient")


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
