"""Render every error as `{"error": {"code", "message", "field"?}}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import ApplianceError, BackendBusy

log = logging.getLogger("appliance.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        content=body, status_code=status, headers=headers or {}, media_type="application/json"
    )


def appliance_error(_: Request[Any, Any, Any], exc: ApplianceError) -> Response[Any]:
    """Our own errors carry their status and code."""
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BackendBusy) else None
    return _json(exc.status_code, exc.to_dict(), headers)


def _field_of(key: str) -> str:
    return key.removeprefix("body.") if key else "body"


def validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's body validation: 422 naming the first bad field (400 for unparseable JSON)."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    if not extra:
        return _json(
            400,
            {
                "error": {
                    "code": "malformed_body",
                    "field": "body",
                    "message": f"the request body could not be read: {exc.detail}",
                }
            },
        )
    first = extra[0]
    field = _field_of(str(first.get("key") or ""))
    message = str(first.get("message") or "invalid value")
    return _json(
        422,
        {
            "error": {
                "code": "invalid_input",
                "field": field,
                "message": f"{field}: {message}",
                "errors": [
                    {"field": _field_of(str(e.get("key") or "")), "message": str(e.get("message"))}
                    for e in extra
                ],
            }
        },
    )


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Framework errors (unknown route, wrong method, body too large...)."""
    status = exc.status_code
    message = exc.detail
    if status == 413:
        message = "the request body is larger than the configured limit (max_body_bytes)"
    code = _HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
    body: dict[str, Any] = {"code": code, "message": message}
    if status == 400:
        # Litestar raises a plain 400 when the body cannot be decoded at all.
        body = {
            "code": "malformed_body",
            "field": "body",
            "message": f"the request body is not valid JSON ({message})",
        }
    return _json(status, {"error": body}, dict(exc.headers or {}))


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log the type (never the message, which may quote input) and answer 500."""
    request_id = request.scope.get("state", {}).get("request_id", "")
    log.error(
        "unhandled error",
        exc_info=(type(exc), exc, None),
        extra={"request_id": request_id, "path": request.url.path},
    )
    return _json(
        500,
        {
            "error": {
                "code": "internal_error",
                "message": f"internal error (request id {request_id})",
            }
        },
    )


EXCEPTION_HANDLERS: Any = {
    ApplianceError: appliance_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
