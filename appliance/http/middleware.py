"""ASGI middleware: request ids, one metadata-only log line per request (the route template,
never the raw path) and its count and duration in `/metrics`, security headers, and the refusal
of NUL characters, invalid UTF-8 and over-deep JSON in request bodies.

Every response carries the CSP (no `unsafe-inline`), `nosniff`, Referrer-Policy and framing
rules; HSTS is added when TLS is in effect.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.audit import requests
from appliance.auth.guards import route_target
from appliance.errors import InvalidInput, MalformedBody
from appliance.metrics import request_done

log = logging.getLogger("appliance.http")

QUIET_PATHS = ("/healthz", "/readyz")
"""Probes: no log line."""
SCRAPES = ("/metrics",)
"""Prometheus scrapes: no log line and no audit row when served (a refusal has both)."""

ROWS_STATE = "audit_rows"
"""Scope state: the `RequestRows` counting the audit rows a request appended."""

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


def logged_path(scope: Scope) -> str:
    """The route template and a keyed hash of the path parameters (see `route_target`): a
    raw path can hold what a caller typed into it, and logs never keep request text."""
    app = scope.get("litestar_app")
    identity = getattr(getattr(app, "state", None), "identity", None)
    key = identity.pepper if identity is not None else b"appliance-log"
    return route_target(scope, key)


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
        # Counts the audit rows this request appends, so it writes one (see `http.audit`).
        rows, token = requests.track()
        scope["state"][ROWS_STATE] = rows
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
            requests.untrack(token)
            seconds = time.perf_counter() - started
            method = str(scope.get("method", ""))
            template = str(scope.get("path_template") or "(unrouted)")
            request_done(
                route=template,
                method=method,
                status=status,
                seconds=seconds,
                outcome=rows.outcome,
                policy=rows.policy,
            )
            # Probes and served scrapes (every few seconds each) would drown the requests.
            if scope["path"] not in QUIET_PATHS and not (scope["path"] in SCRAPES and status < 400):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "path": logged_path(scope),
                        "status": status,
                        "duration_ms": round(seconds * 1000, 1),
                    },
                )

    return middleware


_NUL = "\x00"


def _nul_at(value: Any, where: str) -> str | None:
    """The path (`messages.0.content`) of the first string in `value` holding a NUL."""
    if isinstance(value, str):
        return where if _NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _NUL in str(key):
                return path
            if (found := _nul_at(item, path)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _nul_at(item, f"{where}.{index}" if where else str(index))) is not None:
                return found
    return None


_STRING = re.compile(rb'"(?:[^"\\\\]|\\\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, without parsing it (strings
    are skipped, so brackets inside them do not count). Linear in the body's size."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def check_utf8(body: bytes) -> None:
    """Refuse a JSON body that is not UTF-8 (`MalformedBody`, 400) before it is decoded."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"the request body is not valid UTF-8 (invalid byte at offset {exc.start})",
            field="body",
        ) from None


def check_depth(body: bytes, *, max_depth: int) -> None:
    """Refuse a JSON body nesting arrays and objects deeper than `max_depth` (`MalformedBody`,
    400), before any parser or validator recurses into it."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return  # cannot be deeper than the limit: skip the scan
    depth = json_depth(body)
    if depth > max_depth:
        raise MalformedBody(
            f"the request body nests arrays and objects {depth} deep; at most {max_depth}",
            field="body",
        )


def _refuse(field: str) -> InvalidInput:
    return InvalidInput(f"{field} must not contain a NUL character (U+0000)", field=field)


async def refuse_nul_characters(
    request: Request[Any, Any, Any], *, max_json_depth: int = 64
) -> None:
    """`before_request` hook: path, query, body and form text holding a NUL character is refused
    with a 422 naming the field, before any handler stores it (no database keeps NUL in text).

    A body is checked whatever its declared type (a JSON body is read as JSON even when sent as
    `text/plain`); for multipart forms, the text fields are checked and the files left to the
    document extractors. A JSON body must also be UTF-8 and nest at most `max_json_depth` deep
    (400 `malformed_body`; the app binds the setting), so no decoder or validator downstream
    fails with a 500.
    """
    for name, value in request.path_params.items():
        if isinstance(value, str) and _NUL in value:
            raise _refuse(name)
    for name, value in request.query_params.multi_items():
        if _NUL in name or _NUL in value:
            raise _refuse(name)
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        for name, value in form.multi_items():
            if _NUL in name or (isinstance(value, str) and _NUL in value):
                raise _refuse(name)
        return
    body = await request.body()
    as_json = media_type.endswith("json") or body.lstrip()[:1] in (b"{", b"[")
    if as_json:
        check_utf8(body)
    if b"\\u0000" in body or b"\x00" in body:
        try:
            where = _nul_at(json.loads(body), "")
        except (ValueError, RecursionError):
            raise _refuse("body") from None
        if where is not None:
            raise _refuse(where or "body")
    if as_json:
        check_depth(body, max_depth=max_json_depth)
