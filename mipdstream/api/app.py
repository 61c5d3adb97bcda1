"""``create_app(live)``: the FastAPI application over a running :class:`LiveService`:
the JSON API under ``/api/v1`` (one router per resource), the live event stream, the
dashboard under ``/dashboard`` and the operations endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse

from mipdstream.api import health
from mipdstream.api.hub import hub_for
from mipdstream.api.login_guard import LoginGuard
from mipdstream.api.problems import install_problem_handlers, problem_media_types
from mipdstream.api.routes import alerts, audit, auth, devices, events, fhir, patients, posterior, recommendations, timeline, triage
from mipdstream.service.live import LiveService

ROUTERS = (auth, patients, devices, timeline, posterior, alerts, recommendations, triage, events, audit, fhir)


def create_app(live: LiveService) -> FastAPI:
    app = FastAPI(
        title="mipdstream",
        summary="Streaming model-informed precision dosing: posteriors, forecasts and alerts for care teams.",
        version="0.1.0",
    )
    app.state.live = live
    app.state.login_guard = LoginGuard(live.settings.api_login_max_failures, live.settings.api_login_window_s)
    hub_for(live)  # start collecting live events now
    install_problem_handlers(app)
    app.include_router(health.router)
    for module in ROUTERS:
        app.include_router(module.router)
    from mipdstream.dashboard import router as dashboard

    app.include_router(dashboard)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = problem_media_types(schema)
        return app.openapi_schema

    app.openapi = openapi
    return app
