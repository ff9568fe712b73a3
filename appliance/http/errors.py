"""Render every error as `{"error": {"code", "message", "field"?}}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from appliance.errors import (
    ApplianceError,
    AuthError,
    BackendBusy,
    PasswordChangeRequired,
    RateLimited,
)
from appliance.http.middleware import logged_path
from appliance.http.receipts import receipt_headers

log = logging.getLogger("appliance.errors")

_HTTP_CODES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _field_of(key: str) -> str:
    return key.removeprefix("body.") if key else "body"


def describe(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and the `error` object for any exception; the one mapping the app uses."""
    if isinstance(exc, ApplianceError):
        return exc.status_code, exc.to_dict()["error"]
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        errors = [
            {"field": _field_of(str(e.get("key") or "")), "message": str(e.get("message"))}
            for e in exc.extra
        ]
        first = errors[0]
        return 422, {
            "code": "invalid_input",
            "field": first["field"],
            "message": f"{first['field']}: {first['message']}",
            "errors": errors,
        }
    if isinstance(exc, HTTPException) and exc.status_code == 400:
        # Litestar raises a plain 400 when the body cannot be decoded at all.
        return 400, {
            "code": "malformed_body",
            "field": "body",
            "message": f"the request body is not valid JSON ({exc.detail})",
        }
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        message = exc.detail
        if exc.status_code == 413:
            message = "the request body is larger than the configured limit (max_body_bytes)"
        return exc.status_code, {
            "code": _HTTP_CODES.get(exc.status_code, "error"),
            "message": message,
        }
    return 500, {"code": "internal_error", "message": "internal error"}


def _sign_in_redirect(request: Request[Any, Any, Any], exc: Exception) -> Response[Any] | None:
    """A browser asking for a page without a session goes to the sign-in page instead."""
    if not isinstance(exc, AuthError | PasswordChangeRequired):
        return None
    path = request.url.path
    if path.startswith(("/api/", "/v1/", "/ollama/")) or request.method != "GET":
        return None
    target = "/account/password" if isinstance(exc, PasswordChangeRequired) else "/login"
    if request.headers.get("hx-request"):
        return Response(content=None, status_code=200, headers={"HX-Redirect": target})
    if "text/html" not in request.headers.get("accept", ""):
        return None
    return Response(content=None, status_code=303, headers={"Location": target})


_API_PREFIXES = ("/api/", "/v1/", "/ollama/")


def _toast(
    request: Request[Any, Any, Any], status: int, body: dict[str, Any], headers: dict[str, str]
) -> Response[Any]:
    """For htmx: the error as a toast partial appended to the page's `#toasts` region."""
    engine = request.app.template_engine
    message = str(body.get("message") or "the request failed")
    if engine is None:
        return Response(content=message, status_code=status, media_type="text/plain")
    html = engine.get_template("_toast.html").render(message=message, level="error")
    headers = headers | {"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"}
    return Response(content=html, status_code=status, headers=headers, media_type="text/html")


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one exception handler: JSON error body, `Retry-After` when a queue is full."""
    redirect = _sign_in_redirect(request, exc)
    if redirect is not None:
        return redirect
    status, body = describe(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, BackendBusy | RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)
    if status == 500:
        request_id = request.scope.get("state", {}).get("request_id", "")
        # The type only: a third-party message may quote input text.
        log.error(
            "unhandled error",
            exc_info=(type(exc), exc, None),
            extra={"request_id": request_id, "path": logged_path(request.scope)},
        )
        body["message"] = f"internal error (request id {request_id})"
    receipt = body.get("receipt")
    if isinstance(receipt, dict):
        headers.update(receipt_headers(receipt))
    path = request.url.path
    if request.headers.get("hx-request") and not path.startswith(_API_PREFIXES):
        return _toast(request, status, body, headers)
    if path.startswith("/v1/"):
        # OpenAI's error shape, so OpenAI clients raise their usual exceptions.
        content: dict[str, Any] = {
            "error": {
                "message": body.get("message"),
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": body.get("field"),
                "code": body.get("code"),
            }
        }
    elif path.startswith("/ollama/"):
        content = {"error": body.get("message")}  # Ollama's error shape
    else:
        content = {"error": body}
    return Response(
        content=content, status_code=status, headers=headers, media_type="application/json"
    )


EXCEPTION_HANDLERS: Any = {Exception: handle}
