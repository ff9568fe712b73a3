"""`Identity`: the one object the web layer and the CLI use for sign-in, sessions and keys.

It wraps the account, session and key modules, counts rate limits, and writes every auth event
to the audit trail (`auth.login`, `auth.login_failed`, `auth.logout`, `session.revoked`,
`apikey.created`, `apikey.revoked`, `apikey.denied`, `apikey.team_changed`, `user.created`,
`user.role_changed`, `user.team_changed`, `user.disabled`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import anyio
from sqlalchemy import Engine

from appliance.audit.events import (
    ApiKeyCreated,
    ApiKeyDenied,
    ApiKeyRevoked,
    ApiKeyTeamChanged,
    AuthLogin,
    AuthLoginFailed,
    AuthLogout,
    Event,
    SessionRevoked,
    UserCreated,
    UserDisabled,
    UserReviewerChanged,
    UserRoleChanged,
    UserTeamChanged,
)
from appliance.audit.events import AuthThrottled as AuthThrottledEvent
from appliance.audit.store import AuditLog, AuditRecord
from appliance.auth import accounts, apikeys, sessions
from appliance.auth.keycache import KeyCache
from appliance.auth.models import ApiKey
from appliance.auth.ratelimit import (
    Refusal,
    failure_throttle,
    rate_limiter,
    report_when_over,
    shared_windows,
)
from appliance.auth.roles import KEY_ROLE, Principal
from appliance.config import Settings
from appliance.db.models import User
from appliance.errors import AuthError, AuthThrottled, LoginFailed, LoginThrottled, RateLimited


@dataclass(frozen=True)
class Caller:
    """Where a request comes from, for audit rows and rate-limit buckets."""

    source: str | None = None
    request_id: str | None = None


class Identity:
    """Sign-in, sessions, keys and their audit events for one app (or one CLI command)."""

    def __init__(self, settings: Settings, engine: Engine, audit: AuditLog) -> None:
        self.settings = settings
        self.engine = engine
        self.audit = audit
        # In the database when several processes may serve it (PostgreSQL), else in memory.
        self.windows = shared_windows(engine)
        self.limiter = rate_limiter(self.windows)
        self.auth_throttle = failure_throttle(self.windows, "auth")
        # Keys verified by this process, dropped whenever any key or owner changes anywhere.
        self.keys = KeyCache(engine)
        self._pending: set[asyncio.Task[None]] = set()

    @cached_property
    def pepper(self) -> bytes:
        """The API-key pepper, read (or created) on first use."""
        return apikeys.load_pepper(self.settings.resolved_api_key_pepper_file)

    # -- audit ---------------------------------------------------------------------------------

    def record_sync(
        self,
        event: type[Event],
        *,
        actor: str,
        outcome: str,
        caller: Caller,
        status: int | None = None,
        target: str | None = None,
        role: str | None = None,
    ) -> str:
        """Write one auth event (ids, outcomes and reasons only; never a secret)."""
        return self.audit.append_sync(
            audit_record(
                event.name,
                actor=actor,
                outcome=outcome,
                source=caller.source,
                request_id=caller.request_id,
                status_code=status,
                target=target,
                role=role,
            )
        )

    async def record(
        self,
        event: type[Event],
        *,
        actor: str,
        outcome: str,
        caller: Caller,
        status: int | None = None,
        target: str | None = None,
        role: str | None = None,
    ) -> str:
        """`record_sync` off the event loop."""
        return await anyio.to_thread.run_sync(
            lambda: self.record_sync(
                event,
                actor=actor,
                outcome=outcome,
                caller=caller,
                status=status,
                target=target,
                role=role,
            )
        )

    # -- rate limits ---------------------------------------------------------------------------

    async def limit(self, buckets: list[str], per_minute: int) -> None:
        """Count a hit in every bucket; RateLimited (429 + Retry-After) if any is full, and
        RateLimitsUnavailable (503) if the windows replicas share cannot be counted in."""
        # A dict inline (SQLite); a statement on a worker thread (PostgreSQL).
        wait = await self.limiter.hit_async(buckets, per_minute)
        if wait is not None:
            raise RateLimited("too many requests; slow down", retry_after=wait)

    # -- passwords and sessions ----------------------------------------------------------------

    async def password_login(
        self, *, username: str, password: str, caller: Caller
    ) -> tuple[User, str, str]:
        """Check a password and start a session; returns (user, cookie value, CSRF token)."""
        try:
            await self.limit(
                [f"login:addr:{caller.source}", f"login:user:{username.lower()}"],
                self.settings.login_rate_per_minute,
            )
            user = await anyio.to_thread.run_sync(
                lambda: accounts.authenticate(
                    self.engine, self.settings, username=username, password=password
                )
            )
        except LoginFailed as exc:
            actor = f"user:{exc.user_id}" if exc.user_id else f"username:{username[:100]}"
            await self.record(
                AuthLoginFailed, actor=actor, outcome=exc.reason, caller=caller, status=401
            )
            raise
        except LoginThrottled as exc:
            await self.record(
                AuthLoginFailed,
                actor=f"user:{exc.user_id}",
                outcome="locked",
                caller=caller,
                status=429,
            )
            raise
        except RateLimited:
            await self.record(
                AuthLoginFailed,
                actor=f"username:{username[:100]}",
                outcome="rate_limited",
                caller=caller,
                status=429,
            )
            raise
        token, csrf = await self.start_session(user, caller=caller, method="password")
        return user, token, csrf

    async def start_session(self, user: User, *, caller: Caller, method: str) -> tuple[str, str]:
        """A new session (new id every sign-in) and its `auth.login` event."""
        token, csrf = await anyio.to_thread.run_sync(
            lambda: sessions.create(self.engine, user_id=user.id, source=caller.source)
        )
        await self.record(
            AuthLogin,
            actor=f"user:{user.id}",
            outcome=method,
            caller=caller,
            status=200,
            target=f"session:{sessions.digest(token)[:16]}",
            role=user.role,
        )
        return token, csrf

    async def logout(self, principal: Principal, *, caller: Caller) -> None:
        """End the caller's session."""
        if principal.session_hash is None:
            return
        session_hash = principal.session_hash
        await anyio.to_thread.run_sync(lambda: sessions.end(self.engine, session_hash))
        await self.record(
            AuthLogout,
            actor=principal.actor_id,
            outcome="ok",
            caller=caller,
            target=f"session:{session_hash[:16]}",
            role=principal.role,
        )

    def session_principal(self, token: str) -> Principal | None:
        """The principal of a session cookie, or None when it is unknown or expired."""
        active = sessions.lookup(self.engine, self.settings, token)
        if active is None:
            return None
        user = active.user
        return Principal(
            kind="user",
            id=user.id,
            name=user.username,
            role=user.role,
            session_hash=active.id_hash,
            csrf_token=active.csrf_token,
            must_change_password=user.must_change_password,
            permissions=frozenset({"reviewer"}) if user.reviewer else frozenset(),
            team=user.team,
        )

    async def key_principal(self, presented: str, *, caller: Caller) -> Principal:
        """The principal of a Bearer key; AuthError (audited `apikey.denied`) otherwise.

        An address past `auth_failures_per_minute` failed keys is refused with 429 before its
        key is checked, until the window ends; those refusals are audited as one
        `auth.throttled` row per address and window, with their count."""
        address = caller.source or "unknown"
        limit = self.settings.auth_failures_per_minute
        refusal = await self.auth_throttle.refuse_async(address, limit)
        if refusal is not None:
            if refusal.first:
                self._count_refusals(address, refusal)
            throttled = AuthThrottled(
                "too many failed API keys from this address; retry later",
                retry_after=refusal.retry_after,
            )
            # Counted in one `auth.throttled` row per window, not a row each.
            throttled.audited = True  # type: ignore[attr-defined]
            raise throttled
        digest = apikeys.digest_of(self.pepper, presented)
        # The change counter, read on every request with a key: on a worker thread, so a slow
        # database holds up this request and not the event loop. The cache itself is memory.
        version = await anyio.to_thread.run_sync(self.keys.version)
        known = self.keys.get(digest, version=version)
        if known is not None:
            return known
        check = await anyio.to_thread.run_sync(
            lambda: apikeys.verify(self.engine, self.pepper, presented)
        )
        if check.key is None:
            await self.auth_throttle.failed_async(address)
            actor = f"apikey:{check.key_id}" if check.key_id else "anonymous"
            await self.record(
                ApiKeyDenied, actor=actor, outcome=check.reason, caller=caller, status=401
            )
            exc = AuthError("the API key is not valid (unknown, revoked or expired)")
            exc.audited = True  # type: ignore[attr-defined]
            raise exc
        principal = key_to_principal(check.key, team=check.team)
        self.keys.put(digest, principal, expires_at=check.key.expires_at, version=version)
        return principal

    def _count_refusals(self, address: str, refusal: Refusal) -> None:
        """Write the `auth.throttled` row of `address` when its window ends (or when the app
        stops first), counting every refusal of the window by every replica, once."""
        report_when_over(
            self.auth_throttle,
            address,
            refusal,
            self._pending,
            audit=self.audit,
            event=AuthThrottledEvent,
            status_code=429,
        )

    # -- administration ------------------------------------------------------------------------

    def create_key_sync(
        self,
        *,
        name: str,
        scopes: list[str],
        policy: str | None,
        expires_days: int | None,
        owner_id: str | None,
        actor: str,
        caller: Caller,
        team: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key and audit `apikey.created` (and `apikey.team_changed` with a team)."""
        row, key = apikeys.create(
            self.engine,
            self.pepper,
            name=name,
            scopes=scopes,
            policy=policy,
            expires_days=expires_days,
            owner_id=owner_id,
            team=team,
        )
        self.record_sync(
            ApiKeyCreated, actor=actor, outcome="ok", caller=caller, target=f"apikey:{row.id}"
        )
        if row.team is not None:
            self._team_changed(ApiKeyTeamChanged, f"apikey:{row.id}", row.team, None, actor, caller)
        return row, key

    def set_key_team_sync(
        self, ref: str, team: str | None, *, actor: str, caller: Caller
    ) -> ApiKey:
        """Put a key in `team` (None: its owner's team applies); audited when it changes."""
        row = apikeys.find(self.engine, ref)
        old = apikeys.set_team(self.engine, row.id, team)
        row = apikeys.find(self.engine, row.id)
        if old != row.team:
            self._team_changed(ApiKeyTeamChanged, f"apikey:{row.id}", row.team, old, actor, caller)
        return row

    def create_user_sync(
        self,
        *,
        username: str,
        role: str,
        password: str | None,
        team: str | None,
        actor: str,
        caller: Caller,
    ) -> tuple[User, str]:
        """Create a local account and audit `user.created` (and `user.team_changed` with a
        team); returns it and its initial password."""
        user, password = accounts.create_user(
            self.engine, username=username, role=role, password=password, team=team
        )
        self.record_sync(
            UserCreated,
            actor=actor,
            outcome="ok",
            caller=caller,
            target=f"user:{user.id}",
            role=user.role,
        )
        if user.team is not None:
            self._team_changed(UserTeamChanged, f"user:{user.id}", user.team, None, actor, caller)
        return user, password

    def set_team_sync(self, ref: str, team: str | None, *, actor: str, caller: Caller) -> User:
        """Put a user in `team` (None: no team); audited when it changes. Sessions stay: the
        team is read afresh with every request."""
        user = accounts.find_user(self.engine, ref)
        old = accounts.set_team(self.engine, user.id, team)
        user = accounts.find_user(self.engine, user.id)
        if old != user.team:
            self._team_changed(UserTeamChanged, f"user:{user.id}", user.team, old, actor, caller)
        return user

    async def team_changed(
        self, user: User, previous: str | None, *, actor: str, caller: Caller
    ) -> None:
        """Audit `user.team_changed` for a change made at sign-in (single sign-on)."""
        await anyio.to_thread.run_sync(
            lambda: self._team_changed(
                UserTeamChanged, f"user:{user.id}", user.team, previous, actor, caller
            )
        )

    def _team_changed(
        self,
        event: type[UserTeamChanged | ApiKeyTeamChanged],
        target: str,
        team: str | None,
        previous: str | None,
        actor: str,
        caller: Caller,
    ) -> None:
        self.audit.append_sync(
            event(
                actor=actor,
                source=caller.source,
                request_id=caller.request_id,
                target=target,
                team=team,
                previous=previous,
            ).record()
        )

    def revoke_key_sync(self, ref: str, *, actor: str, caller: Caller) -> ApiKey:
        """Revoke a key at once and audit `apikey.revoked`."""
        row = apikeys.find(self.engine, ref)
        apikeys.revoke(self.engine, row.id)
        self.record_sync(
            ApiKeyRevoked, actor=actor, outcome="ok", caller=caller, target=f"apikey:{row.id}"
        )
        return row

    def set_role_sync(self, ref: str, role: str, *, actor: str, caller: Caller) -> User:
        """Change a role and audit `user.role_changed`; the user's sessions end (new rights)."""
        user = accounts.find_user(self.engine, ref)
        old = accounts.set_role(self.engine, user.id, role)
        if old != role:
            sessions.end_all(self.engine, user.id)
            self.record_sync(
                UserRoleChanged,
                actor=actor,
                outcome=f"{old}->{role}",
                caller=caller,
                target=f"user:{user.id}",
                role=role,
            )
        return accounts.find_user(self.engine, user.id)

    def set_reviewer_sync(self, ref: str, reviewer: bool, *, actor: str, caller: Caller) -> User:
        """Grant or withdraw the reviewer permission (staff only); audited, sessions end."""
        user = accounts.find_user(self.engine, ref)
        if accounts.set_reviewer(self.engine, user.id, reviewer) != reviewer:
            sessions.end_all(self.engine, user.id)
            self.record_sync(
                UserReviewerChanged,
                actor=actor,
                outcome="granted" if reviewer else "revoked",
                caller=caller,
                target=f"user:{user.id}",
                role=user.role,
            )
        return accounts.find_user(self.engine, user.id)

    def disable_sync(self, ref: str, *, actor: str, caller: Caller) -> User:
        """Disable an account: its sessions end and its keys are revoked at once."""
        user = accounts.find_user(self.engine, ref)
        accounts.set_disabled(self.engine, user.id, True)
        self.record_sync(
            UserDisabled, actor=actor, outcome="ok", caller=caller, target=f"user:{user.id}"
        )
        self.revoke_access_sync(user.id, actor=actor, caller=caller)
        return accounts.find_user(self.engine, user.id)

    def revoke_access_sync(self, user_id: str, *, actor: str, caller: Caller) -> tuple[int, int]:
        """End every session and revoke every key of a user; (sessions, keys) ended."""
        ended = sessions.end_all(self.engine, user_id)
        if ended:
            self.record_sync(
                SessionRevoked,
                actor=actor,
                outcome=f"ended {ended}",
                caller=caller,
                target=f"user:{user_id}",
            )
        keys = apikeys.revoke_owned(self.engine, user_id)
        for key_id in keys:
            self.record_sync(
                ApiKeyRevoked,
                actor=actor,
                outcome="ok",
                caller=caller,
                target=f"apikey:{key_id}",
            )
        return ended, len(keys)


def audit_record(action: str, **values: Any) -> AuditRecord:
    """An `AuditRecord`, with `target` and `role` when the trail's record has those fields.

    Without them (the minimal trail) the target is folded into `outcome`, so the event still
    says what it was about.
    """
    fields = {f.name for f in dataclasses.fields(AuditRecord)}
    target, role = values.pop("target", None), values.pop("role", None)
    if "target" in fields:
        values["target"] = target
    elif target:
        values["outcome"] = f"{values['outcome']} {target}"[:50]
    if "role" in fields:
        values["role"] = role
    return AuditRecord(action=action, **values)


def key_to_principal(key: ApiKey, *, team: str | None = None) -> Principal:
    """The principal a valid key authenticates as; `team` is the key's own team or, without
    one, its owner's (`apikeys.verify` reads both)."""
    return Principal(
        kind="apikey",
        id=key.id,
        name=key.name,
        role=KEY_ROLE,
        scopes=frozenset(key.scopes),
        policy=key.policy,
        team=team or key.team,
    )
