"""Sign-in pages: local password, single sign-on callback, sign-out, password change.

The login form is protected against login CSRF with a double-submit token: a random value in a
`__Host-` cookie that must come back in the form. Pages for signed-in users carry the session's
token instead (hidden field here, `hx-headers` on `<body>` for htmx requests).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie
from litestar.params import URLEncodedBody
from litestar.response import Redirect, Response, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from appliance.audit.events import AuthLoginFailed, UserPasswordChanged, UserRoleChanged
from appliance.auth import accounts, sessions
from appliance.auth.guards import CSRF_FIELD, caller_of, identity_of, principal_of
from appliance.auth.oidc import LOGIN_COOKIE, OidcClient
from appliance.auth.roles import ROLES, access, public
from appliance.errors import InvalidInput, LoginFailed

LOGIN_CSRF_COOKIE = "__Host-appliance-csrf"
_SIGNED_IN = access(roles=ROLES, password_change=True)


def _cookie(name: str, value: str, *, max_age: int) -> Cookie:
    """A `__Host-` cookie: path `/`, no domain, HttpOnly, SameSite=Lax and always Secure.

    Browsers refuse a `__Host-` cookie without `Secure`, and they treat loopback as a secure
    origin, so `Secure` cookies also work for development over plain HTTP on 127.0.0.1.
    """
    return Cookie(
        key=name,
        value=value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=True,
    )


def _gone(name: str) -> Cookie:
    return _cookie(name, "", max_age=0)


def _redirect(to: str, cookies: list[Cookie] | None = None) -> Redirect:
    return Redirect(to, status_code=HTTP_303_SEE_OTHER, cookies=cookies or [])


def _oidc(request: Request[Any, Any, Any]) -> OidcClient | None:
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    return client


def _login_page(
    request: Request[Any, Any, Any],
    *,
    error: str | None = None,
    status: int = 200,
    username: str = "",
) -> Template:
    token = secrets.token_urlsafe(32)
    return Template(
        template_name="login.html",
        context={
            "csrf_token": token,
            "error": error,
            "sso": _oidc(request) is not None,
            "username": username,
        },
        status_code=status,
        cookies=[_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600)],
        headers={"Cache-Control": "no-store"},
    )


class AuthPagesController(Controller):
    """Sign-in, sign-out and password pages."""

    include_in_schema = False

    @get("/login", opt=public(), sync_to_thread=False)
    def login_form(self, request: Request[Any, Any, Any]) -> Template:
        """The sign-in page."""
        return _login_page(request)

    @post("/login", opt=public(), status_code=200)
    async def login(
        self, request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]]
    ) -> Response[Any]:
        """Check the password; on success a new session and a redirect."""
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        presented = data.get(CSRF_FIELD, "")
        if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
            return _login_page(request, error="The form expired; please try again.", status=403)
        username = data.get("username", "").strip()
        password = data.get("password", "")
        identity = identity_of(request)
        try:
            user, token, _ = await identity.password_login(
                username=username, password=password, caller=caller_of(request)
            )
        except LoginFailed:
            return _login_page(
                request, error="Wrong username or password.", status=401, username=username
            )
        cookies = [
            _cookie(
                sessions.SESSION_COOKIE,
                token,
                max_age=identity.settings.session_absolute_timeout_s,
            ),
            _gone(LOGIN_CSRF_COOKIE),
        ]
        return _redirect("/account/password" if user.must_change_password else "/", cookies)

    @post("/logout", opt=_SIGNED_IN, status_code=200)
    async def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        """End this session."""
        await identity_of(request).logout(principal_of(request), caller=caller_of(request))
        return _redirect("/login", [_gone(sessions.SESSION_COOKIE)])

    @get("/account/password", opt=_SIGNED_IN, sync_to_thread=False)
    def password_form(self, request: Request[Any, Any, Any]) -> Template:
        """The password-change page (forced at first sign-in of a local account)."""
        principal = principal_of(request)
        return Template(
            template_name="password.html",
            context={
                "csrf_token": principal.csrf_token,
                "forced": principal.must_change_password,
                "min_length": accounts.MIN_PASSWORD_LENGTH,
            },
        )

    @post("/account/password", opt=_SIGNED_IN, status_code=200)
    async def change_password(
        self, request: Request[Any, Any, Any], data: URLEncodedBody[dict[str, str]]
    ) -> Response[Any]:
        """Set a new password; every session of the account ends and a fresh one starts."""
        principal = principal_of(request)
        identity = identity_of(request)
        caller = caller_of(request)
        try:
            await anyio.to_thread.run_sync(
                lambda: accounts.change_password(
                    identity.engine,
                    principal.id,
                    current=data.get("current_password", ""),
                    new=data.get("password", ""),
                )
            )
        except InvalidInput as exc:
            return Template(
                template_name="password.html",
                context={
                    "csrf_token": principal.csrf_token,
                    "forced": principal.must_change_password,
                    "min_length": accounts.MIN_PASSWORD_LENGTH,
                    "error": exc.message,
                },
                status_code=422,
            )
        await anyio.to_thread.run_sync(lambda: sessions.end_all(identity.engine, principal.id))
        await identity.record(
            UserPasswordChanged,
            actor=principal.actor_id,
            outcome="ok",
            caller=caller,
            target=principal.actor_id,
            role=principal.role,
        )
        user = await anyio.to_thread.run_sync(
            lambda: accounts.find_user(identity.engine, principal.id)
        )
        token, _ = await identity.start_session(user, caller=caller, method="password_changed")
        cookie = _cookie(
            sessions.SESSION_COOKIE,
            token,
            max_age=identity.settings.session_absolute_timeout_s,
        )
        return _redirect("/", [cookie])

    @get("/auth/oidc/login", opt=public())
    async def oidc_login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Redirect to the identity provider (authorization code + PKCE, state, nonce)."""
        client = _oidc(request)
        if client is None:
            return _login_page(request, error="Single sign-on is not configured.", status=404)
        redirect_uri = client.settings.oidc_redirect_url or str(
            request.url.with_replacements(path="/auth/oidc/callback", query="")
        )
        url, cookie = await client.begin(redirect_uri)
        return Redirect(
            url,
            status_code=HTTP_303_SEE_OTHER,
            cookies=[_cookie(LOGIN_COOKIE, cookie, max_age=600)],
        )

    @get("/auth/oidc/callback", opt=public())
    async def oidc_callback(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Verify the provider's answer; on success a new session and a redirect home."""
        client = _oidc(request)
        if client is None:
            return _login_page(request, error="Single sign-on is not configured.", status=404)
        identity = identity_of(request)
        caller = caller_of(request)
        params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        try:
            sso = await client.complete(cookie=request.cookies.get(LOGIN_COOKIE), params=params)
            provisioned = await anyio.to_thread.run_sync(lambda: client.provision(sso))
        except LoginFailed as exc:
            actor = f"user:{exc.user_id}" if exc.user_id else "anonymous"
            await identity.record(
                AuthLoginFailed, actor=actor, outcome=exc.reason, caller=caller, status=401
            )
            page = _login_page(
                request, error="Single sign-on failed; please try again.", status=401
            )
            page.cookies.append(_gone(LOGIN_COOKIE))
            return page
        user = provisioned.user
        if provisioned.previous_role is not None:
            await identity.record(
                UserRoleChanged,
                actor="sso",
                outcome=f"{provisioned.previous_role}->{user.role}",
                caller=caller,
                target=f"user:{user.id}",
                role=user.role,
            )
        if provisioned.team_changed:
            await identity.team_changed(user, provisioned.previous_team, actor="sso", caller=caller)
        token, _ = await identity.start_session(user, caller=caller, method="oidc")
        cookies = [
            _cookie(
                sessions.SESSION_COOKIE,
                token,
                max_age=identity.settings.session_absolute_timeout_s,
            ),
            _gone(LOGIN_COOKIE),
        ]
        return _redirect("/", cookies)
