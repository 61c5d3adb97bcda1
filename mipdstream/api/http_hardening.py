"""Browser-facing hardening of every HTTP response, and the request body limit.

:class:`SecurityHeaders` wraps the whole ASGI application, outside Starlette's
``ServerErrorMiddleware``, so the headers are on pages, API answers, static files and error
documents alike, 500s included (an ordinary middleware sits inside ``ServerErrorMiddleware``
and never sees the 500 it sends).

The Content-Security-Policy allows scripts, styles, images, fonts and connections from the
service's own origin only; no inline script and no ``eval``; no plugins, no framing, no
``<base>``, forms posted only to the origin. Styles are the one exception, see
:data:`STYLE_SRC`.

:class:`BodySizeLimit` refuses a request whose body exceeds the limit with 413 and a problem
document: at once when ``Content-Length`` says so (the route never runs), or, for a body sent
without a length, as soon as the bytes read pass the limit.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# plotly.js (4.x, served from the plotly package) styles elements through element.style, which
# CSP does not govern, and adds two <style> elements of its own: one it creates empty and
# fills through the CSSOM (insertRule: its cursors, mode bar and hover rules), and MapLibre's
# fixed stylesheet, set as the element's text when the bundle loads. style-src admits exactly
# these by hash (the empty string's, and that stylesheet's, read from the bundle served), so
# 'unsafe-inline' is not needed. Measured in chromium: with style-src 'self' alone both are
# refused (two violations on every page that loads plotly) and the chart draws, but with its
# mode bar unstyled over the plot and its legend gone; with the hashes it draws as with
# 'unsafe-inline', with no violation (tests/api/test_dashboard_csp.py).
EMPTY_STYLE_HASH = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
STYLE_TEXT = re.compile(r"""\.textContent='((?:[^'\\]|\\.)*)'""")


def csp_hash(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def plotly_style_hashes(bundle: str) -> tuple[str, ...]:
    """Hashes of the fixed stylesheets the plotly.js bundle sets as a <style> element's text
    (a literal with escapes would hash differently in the browser: the browser test catches it)."""
    return tuple(dict.fromkeys(csp_hash(m.group(1)) for m in STYLE_TEXT.finditer(bundle)))


def content_security_policy(style_hashes: tuple[str, ...] = ()) -> str:
    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        " ".join(("style-src 'self'", EMPTY_STYLE_HASH, *style_hashes)),
        "img-src 'self' data:",  # data: for plotly's toImage (the mode bar's PNG download)
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ))


# Besides the Content-Security-Policy.
HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
# Two years; subdomains are not included, since other services of the hospital's domain may not
# speak TLS.
HSTS = (b"strict-transport-security", b"max-age=63072000")


def served_over_tls(scope: Scope, behind_tls_proxy: bool) -> bool:
    """True when the client's connection is TLS: uvicorn's own TLS, a trusted proxy's
    ``X-Forwarded-Proto: https`` (uvicorn rewrites the scheme), or the deployment's word
    (``api_behind_tls_proxy``) that only a TLS-terminating proxy reaches the service."""
    return behind_tls_proxy or scope.get("scheme") in ("https", "wss")


def request_over_tls(request: Request) -> bool:
    return served_over_tls(request.scope, request.app.state.live.settings.api_behind_tls_proxy)


class SecurityHeaders:
    """Adds the Content-Security-Policy ``csp`` and :data:`HEADERS` (and HSTS over TLS) to every
    HTTP response; a header the response set itself is kept."""

    def __init__(self, app: ASGIApp, csp: str, behind_tls_proxy: bool = False):
        self.app, self.behind_tls_proxy = app, behind_tls_proxy
        self.headers = ((b"content-security-policy", csp.encode()), *HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers + ((HSTS,) if served_over_tls(scope, self.behind_tls_proxy) else ())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message = {**message, "headers": [*message.get("headers", ()), *(h for h in extra if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """413 for a request body over ``max_bytes`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"the request body is larger than the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            from mipdstream.api.problems import problem_response

            error = self._too_large()
            await problem_response(Request(scope), 413, error.detail, {"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            # Raised inside the route's body read: FastAPI passes HTTPExceptions on, and the
            # problem handlers answer it.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)
