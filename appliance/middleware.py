"""ASGI middleware: request ids, one metadata-only log line per request, security headers.

Every response carries the CSP (no `unsafe-inline`), `nosniff`, Referrer-Policy and framing
rules; HSTS is added when TLS is in effect.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("appliance.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


HSTS = "max-age=31536000; includeSubDomains"
"""Sent only when the browser reached us over TLS (directly or through a terminating proxy)."""


def _behind_tls(scope: Scope) -> bool:
    if scope.get("scheme") == "https":
        return True
    app = scope.get("litestar_app")
    identity = getattr(getattr(app, "state", None), "identity", None)
    return bool(identity is not None and identity.settings.tls_terminated_by_proxy)


async def security_headers(message: Message, scope: Scope) -> None:
    """`before_send` hook: the security headers on every response, 404s and redirects included.

    A hook rather than the middleware because Litestar runs middleware only for matched routes.
    """
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    if _behind_tls(scope):
        headers["Strict-Transport-Security"] = HSTS


def request_id_of(request: Request[Any, Any, Any]) -> str:
    """The id the middleware gave this request."""
    return str(request.scope.get("state", {}).get("request_id", ""))


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Assign a request id (or accept a well-formed `X-Request-Id`), echo it, log the request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Request-Id"] = request_id
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            if scope["path"] not in ("/healthz", "/readyz"):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope.get("method"),
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )

    return middleware
