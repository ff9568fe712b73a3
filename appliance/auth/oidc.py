"""OpenID Connect sign-in: authorization code with PKCE, over Authlib's httpx OAuth client.

Authlib has no Litestar integration, so this module does what one would: discovery (the
metadata's `issuer` must equal the configured issuer exactly), the authorization URL with `state`,
`nonce` and an S256 PKCE challenge, the code exchange, and the ID-token checks - signature
against the provider's JWKS, `iss` exactly, `aud` containing (and `azp` equal to) our client id,
`exp`/`iat` with a small leeway, and `nonce` equal to the one bound to this browser's attempt.

`state`, `nonce` and the PKCE verifier live server-side in `oidc_logins`, keyed by the digest of a
random value in the browser's login cookie; the row is consumed by the first callback.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine
from sqlmodel import select

from appliance.auth.accounts import as_utc
from appliance.auth.models import OidcLogin
from appliance.auth.roles import ROLE_RANK, ROLES
from appliance.auth.teams import ClaimedTeam, team_from_claims
from appliance.config import Settings
from appliance.db.engine import session_scope
from appliance.db.models import User, utcnow
from appliance.errors import InvalidInput, LoginFailed

log = logging.getLogger("appliance.auth")

LOGIN_COOKIE = "__Host-appliance-login"
LOGIN_TTL = timedelta(minutes=10)
LEEWAY_S = 30
_METADATA_TTL_S = 3600.0
# Algorithms we accept for ID tokens; never `none`, never HMAC with a public secret.
_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def rejected(reason: str) -> LoginFailed:
    """A refused SSO sign-in; `reason` goes to the audit trail."""
    return LoginFailed("single sign-on failed; start again from the sign-in page", reason=reason)


@dataclass(frozen=True)
class SsoIdentity:
    """What a verified ID token says about the user."""

    subject: str
    username: str
    role: str
    claims: dict[str, Any]
    team: ClaimedTeam = field(default_factory=lambda: ClaimedTeam(claimed=False))
    """The team from `oidc_team_claim` (not claimed: the user's team stays as it is)."""


@dataclass(frozen=True)
class Provisioned:
    """The local row of an SSO user after sign-in, and what the sign-in changed on it."""

    user: User
    previous_role: str | None = None
    """The role before this sign-in, when it changed."""
    team_changed: bool = False
    previous_team: str | None = None


class OidcClient:
    """The relying party for one configured issuer."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        if not settings.oidc_issuer or not settings.oidc_client_id:
            raise ValueError("single sign-on needs oidc_issuer and oidc_client_id")
        self.settings = settings
        self.engine = engine
        self.issuer: str = settings.oidc_issuer
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.oidc_client_id,
            client_secret=self.settings.oidc_client_secret or None,
            scope=self.settings.oidc_scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=10,
            trust_env=False,
        )

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, cached for an hour; its issuer must match."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < _METADATA_TTL_S:
            return self._metadata
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            response = await http.get(url)
        if response.status_code != 200:
            raise rejected("discovery_failed")
        metadata: dict[str, Any] = response.json()
        if metadata.get("issuer") != self.issuer:
            raise rejected("issuer_mismatch")
        self._metadata, self._metadata_at, self._jwks = metadata, time.monotonic(), None
        return metadata

    async def _keys(self, *, refresh: bool = False) -> KeySet:
        if self._jwks is not None and not refresh:
            return self._jwks
        metadata = await self.metadata()
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            response = await http.get(metadata["jwks_uri"])
        if response.status_code != 200:
            raise rejected("jwks_failed")
        self._jwks = KeySet.import_key_set(response.json())
        return self._jwks

    async def begin(self, redirect_uri: str) -> tuple[str, str]:
        """Start an attempt; returns (provider URL to redirect to, login cookie value)."""
        metadata = await self.metadata()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(48)
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"], state=state, code_verifier=verifier, nonce=nonce
            )
        cookie = secrets.token_urlsafe(32)
        row = OidcLogin(
            id_hash=_digest(cookie),
            state=state,
            nonce=nonce,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
        )

        def store() -> None:
            with session_scope(self.engine) as session:
                # Abandoned attempts expire; clean them up as new ones start.
                cutoff = utcnow() - LOGIN_TTL
                for old in session.exec(select(OidcLogin).where(OidcLogin.created_at < cutoff)):
                    session.delete(old)
                session.add(row)

        await anyio.to_thread.run_sync(store)
        return str(url), cookie

    def _consume(self, cookie: str | None) -> OidcLogin:
        if not cookie:
            raise rejected("no_login_cookie")
        with session_scope(self.engine) as session:
            row = session.get(OidcLogin, _digest(cookie))
            if row is None:
                raise rejected("unknown_or_used_attempt")
            session.delete(row)
        if utcnow() - as_utc(row.created_at) > LOGIN_TTL:
            raise rejected("attempt_expired")
        return row

    async def complete(self, *, cookie: str | None, params: dict[str, str]) -> SsoIdentity:
        """Finish an attempt from the callback's query; LoginFailed for anything amiss."""
        login = await anyio.to_thread.run_sync(lambda: self._consume(cookie))
        state = params.get("state", "")
        if not hmac.compare_digest(state.encode(), login.state.encode()):
            raise rejected("state_mismatch")
        if "error" in params:
            raise rejected("provider_error")
        code = params.get("code")
        if not code:
            raise rejected("no_code")
        metadata = await self.metadata()
        try:
            async with self._client(login.redirect_uri) as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=login.code_verifier,
                    redirect_uri=login.redirect_uri,
                )
        except Exception as exc:
            log.warning("SSO token exchange failed", extra={"detail": type(exc).__name__})
            raise rejected("token_exchange_failed") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise rejected("no_id_token")
        claims = await self.verify_id_token(id_token, nonce=login.nonce)
        return self.identity_from(claims)

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """Signature, issuer, audience, times and nonce of an ID token; its claims."""
        keys = await self._keys()
        try:
            decoded = jwt.decode(id_token, keys, algorithms=list(_ALGORITHMS))
        except (JoseError, ValueError):
            # A rotated signing key: fetch the JWKS once more before refusing.
            keys = await self._keys(refresh=True)
            try:
                decoded = jwt.decode(id_token, keys, algorithms=list(_ALGORITHMS))
            except (JoseError, ValueError) as exc:
                raise rejected("bad_signature") from exc
        claims = dict(decoded.claims)
        client_id = self.settings.oidc_client_id
        if claims.get("iss") != self.issuer:
            raise rejected("wrong_issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if client_id not in audiences:
            raise rejected("wrong_audience")
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise rejected("wrong_audience")
        now = int(time.time())
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or exp + LEEWAY_S <= now:
            raise rejected("expired")
        if not isinstance(iat, int) or iat - LEEWAY_S > now:
            raise rejected("issued_in_future")
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not hmac.compare_digest(
            token_nonce.encode(), nonce.encode()
        ):
            raise rejected("nonce_mismatch")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise rejected("no_subject")
        return claims

    def identity_from(self, claims: dict[str, Any]) -> SsoIdentity:
        """Username, role and team from the claims; refused when no group maps to a role, or
        when the team claim holds something that is not a team name."""
        settings = self.settings
        username = next(
            (
                str(claims[name])
                for name in (settings.oidc_username_claim, "email", "sub")
                if isinstance(claims.get(name), str) and claims[name]
            ),
            "",
        )
        groups = claims.get(settings.oidc_role_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        roles = [settings.oidc_role_map[g] for g in groups if g in settings.oidc_role_map]
        roles = [r for r in roles if r in ROLES]
        if roles:
            role = max(roles, key=lambda r: ROLE_RANK[r])
        elif settings.oidc_default_role in ROLES:
            role = str(settings.oidc_default_role)
        else:
            raise rejected("no_role")
        try:
            team = team_from_claims(claims, settings.oidc_team_claim)
        except InvalidInput:
            raise rejected("bad_team") from None
        return SsoIdentity(
            subject=f"{self.issuer}#{claims['sub']}"[:255],
            username=username[:150],
            role=role,
            claims=claims,
            team=team,
        )

    def provision(self, sso: SsoIdentity) -> Provisioned:
        """The local row for an SSO user, created or updated (role, and team when claimed)."""
        with session_scope(self.engine) as session:
            user = session.exec(select(User).where(User.oidc_subject == sso.subject)).first()
            if user is None:
                name = sso.username
                if session.exec(select(User).where(User.username == name)).first() is not None:
                    # A local account already has this name: keep both, distinguishably.
                    name = f"{name}@sso"[:150]
                user = User(
                    username=name,
                    role=sso.role,
                    password_hash="",
                    must_change_password=False,
                    oidc_subject=sso.subject,
                    team=sso.team.team,
                )
                session.add(user)
                return Provisioned(user, team_changed=user.team is not None)
            if user.disabled:
                raise LoginFailed("this account is disabled", reason="disabled", user_id=user.id)
            previous = user.role if user.role != sso.role else None
            previous_team = user.team
            team_changed = sso.team.claimed and sso.team.team != previous_team
            user.role = sso.role
            if team_changed:
                user.team = sso.team.team
            user.last_login_at = utcnow()
            session.add(user)
            return Provisioned(user, previous, team_changed, previous_team)
