"""The app-wide guard: every route declares `public()` or `access(...)`, or nobody gets in.

For a route with an access rule the guard authenticates the caller (a Bearer API key, else the
session cookie), refuses an account that must first change its password, checks the role or key
scope, checks the CSRF token of a state-changing browser request, and counts rate limits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import anyio
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from appliance.audit.events import ApiKeyDenied
from appliance.auth.identity import Caller, Identity
from appliance.auth.roles import ACCESS_OPT, PUBLIC_OPT, Access, Principal
from appliance.auth.sessions import SESSION_COOKIE
from appliance.errors import AuthError, CsrfFailed, Forbidden, PasswordChangeRequired

PRINCIPAL_STATE = "principal"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_target(scope: Any, key: bytes) -> str:
    """What audit rows and log lines say about a request's URL: the route template and a keyed
    hash of its path parameters (`/api/v1/admin/keys/{key_id:str}#3f2a...`), never the raw
    path, which can carry whatever a caller typed into it (an e-mail address, an SSN)."""
    template = str(scope.get("path_template") or "(unrouted)")
    params = scope.get("path_params") or {}
    if not params:
        return template[:200]
    canonical = json.dumps(params, sort_keys=True, default=str, ensure_ascii=False)
    digest = hmac.new(key, canonical.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return f"{template[:180]}#{digest.hexdigest()[:16]}"


def identity_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    """The app's `Identity`."""
    identity: Identity = connection.app.state.identity
    return identity


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """Source address and request id of a connection."""
    client = connection.client
    return Caller(
        source=client.host if client else None,
        request_id=str(connection.scope.get("state", {}).get("request_id", "")) or None,
    )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal the guard authenticated; only routes with an access rule have one."""
    principal = connection.scope.get("state", {}).get(PRINCIPAL_STATE)
    if not isinstance(principal, Principal):
        raise AuthError("not signed in")
    return principal


def optional_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The principal if the guard set one (public routes have none)."""
    principal = connection.scope.get("state", {}).get(PRINCIPAL_STATE)
    return principal if isinstance(principal, Principal) else None


def tls_in_effect(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the browser talks TLS to us: https here, or a proxy that terminates it."""
    if connection.scope.get("scheme") == "https":
        return True
    return bool(identity_of(connection).settings.tls_terminated_by_proxy)


async def authenticate(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The caller's principal from a Bearer key or the session cookie; None if neither."""
    identity = identity_of(connection)
    authorization = connection.headers.get("authorization", "")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise AuthError("the Authorization header must be `Bearer <API key>`")
        return await identity.key_principal(credentials.strip(), caller=caller_of(connection))
    token = connection.cookies.get(SESSION_COOKIE)
    if token:
        return await anyio.to_thread.run_sync(lambda: identity.session_principal(token))
    return None


async def _check_csrf(connection: ASGIConnection[Any, Any, Any, Any], expected: str) -> None:
    presented = connection.headers.get(CSRF_HEADER)
    if presented is None and connection.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        # Litestar caches the parsed body on the scope, so the handler can still read it.
        form = await Request[Any, Any, Any](connection.scope, connection.receive).form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfFailed("missing or wrong CSRF token on a state-changing request")


async def enforce_access(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """The guard every route passes; fails closed for a route without a declared rule."""
    if handler.opt.get(PUBLIC_OPT) is True:
        return
    rule = handler.opt.get(ACCESS_OPT)
    if not isinstance(rule, Access):
        raise Forbidden("this route declares no access rule")
    identity = identity_of(connection)
    caller = caller_of(connection)
    principal = await authenticate(connection)
    if principal is None:
        raise AuthError("sign in, or send an API key as `Authorization: Bearer <key>`")
    connection.scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
    if principal.kind == "user" and principal.must_change_password and not rule.password_change:
        raise PasswordChangeRequired("choose a new password before anything else")
    if not principal.allowed(rule):
        if principal.kind == "apikey":
            await identity.record(
                ApiKeyDenied,
                actor=principal.actor_id,
                outcome="scope",
                caller=caller,
                status=403,
                target=route_target(connection.scope, identity.pepper),
                role=principal.role,
            )
            denied = Forbidden(
                f"this API key lacks the scope for this route (needs one of: "
                f"{', '.join(sorted(rule.scopes)) or 'none (browser only)'})"
            )
            denied.audited = True  # type: ignore[attr-defined]
            raise denied
        raise Forbidden(f"the role '{principal.role}' may not use this route")
    if (
        principal.kind == "user"
        and principal.csrf_token is not None
        and connection.scope.get("method", "GET") not in SAFE_METHODS
    ):
        await _check_csrf(connection, principal.csrf_token)
    if rule.rate == "inference":
        buckets = [f"inference:{principal.kind}:{principal.id}"]
        if caller.source is not None:
            buckets.append(f"inference:addr:{caller.source}")
        await identity.limit(buckets, identity.settings.inference_rate_per_minute)
