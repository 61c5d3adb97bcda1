"""``create_app(live)``: the FastAPI application over a running :class:`LiveService`:
the JSON API under ``/api/v1`` (one router per resource), the live event stream, the
dashboard under ``/dashboard`` and the operations endpoints. Every response carries the security
headers of :mod:`mipdstream.api.http_hardening`; request bodies are size-limited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from mipdstream.api import health
from mipdstream.api.http_hardening import BodySizeLimit, SecurityHeaders, content_security_policy, plotly_style_hashes
from mipdstream.api.login_guard import LoginGuard
from mipdstream.api.problems import install_problem_handlers, problem_media_types
from mipdstream.api.routes import (
    alerts, audit, auth, devices, events, exposure, fhir, patients, posterior, recommendations, timeline, triage,
)
from mipdstream.service.live import LiveService

ROUTERS = (auth, patients, devices, timeline, posterior, exposure, alerts, recommendations, triage, events, audit, fhir)

FAVICON = (Path(__file__).parent / "favicon.ico").read_bytes()


class HardenedApi(FastAPI):
    """FastAPI with the security headers and the body limit outside its whole middleware stack,
    ServerErrorMiddleware included, so that its 500s carry the headers too."""

    def build_middleware_stack(self) -> ASGIApp:
        from mipdstream.dashboard import plotly_js

        settings = self.state.live.settings
        limited = BodySizeLimit(super().build_middleware_stack(), settings.api_max_body_bytes)
        csp = content_security_policy(plotly_style_hashes(plotly_js().decode()))
        return SecurityHeaders(limited, csp, settings.api_behind_tls_proxy)


def create_app(live: LiveService) -> FastAPI:
    # No Swagger UI or ReDoc page: both load their code from a CDN and run inline scripts, which
    # the Content-Security-Policy forbids; the schema itself is at /openapi.json.
    app = HardenedApi(
        title="mipdstream",
        summary="Streaming model-informed precision dosing: posteriors, forecasts and alerts for care teams.",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
    )
    app.state.live = live
    app.state.login_guard = LoginGuard(live.settings.api_login_max_failures, live.settings.api_login_window_s)
    install_problem_handlers(app)
    app.include_router(health.router)
    for module in ROUTERS:
        app.include_router(module.router)
    from mipdstream.dashboard import router as dashboard

    app.include_router(dashboard)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = problem_media_types(schema)
        return app.openapi_schema

    app.openapi = openapi
    return app
