"""Errors as RFC 9457 problem documents (``application/problem+json``); never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ValidationIssue(BaseModel):
    location: list[str | int] = Field(description="Where: e.g. ['body', 'amount_mg'] or ['query', 'start_s'].")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field("about:blank", description="URI of the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str | None = Field(None, description="What went wrong in this occurrence.")
    instance: str | None = Field(None, description="The request path.")
    errors: list[ValidationIssue] | None = Field(None, description="Invalid fields (status 422 only).")


TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 413: "Content too large", 422: "Invalid request", 429: "Too many requests",
          500: "Internal server error"}


class ProblemError(Exception):
    """Raise anywhere in a route: becomes a problem document with this status."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def problem_response(request: Request, status: int, detail: str | None, headers: dict[str, str] | None = None,
                     errors: list[ValidationIssue] | None = None) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail, instance=request.url.path, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _issue(error: dict[str, Any]) -> ValidationIssue:
    return ValidationIssue(location=[part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
                           message=str(error.get("msg", "invalid")))


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(request, exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_issue(e) for e in exc.errors()]
        return problem_response(request, 422, "the request does not match the API schema", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "an internal error occurred; it has been logged")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses (media type fixed in :func:`problem_media_types`)."""
    return {status: {"model": Problem, "description": TITLES.get(status, "Error")} for status in statuses}


COMMON_ERRORS = problem_responses(401, 403, 404, 422)


def problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """Error responses are documented as ``application/problem+json`` (what they are sent as),
    also on routes whose success is another media type (an HTML report: FastAPI documents its
    errors under the route's own media type)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and content and PROBLEM_MEDIA_TYPE not in content:
                    documented = next(iter(content.values()))
                    response["content"] = {PROBLEM_MEDIA_TYPE: documented}
    return schema
