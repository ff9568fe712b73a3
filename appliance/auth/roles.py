"""Roles, API-key scopes, the access rule each route declares, and the authenticated principal.

Every route handler declares its rule in `opt`: `opt=public()` or `opt=access(...)`. The app-wide
guard (`appliance.auth.guards.enforce_access`) refuses any route that declares neither, so a
forgotten rule fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ROLES = ("staff", "admin", "auditor")
"""Browser roles. `admin` is content-blind: it manages the box but reads nobody's content."""

SCOPES = ("pii", "tasks", "chat", "documents", "admin", "audit", "metrics")
"""What an API key may be allowed to do (`metrics`: only scrape `/metrics`, for Prometheus)."""

PERMISSIONS = ("reviewer",)
"""Grants on top of a role. `reviewer`: a staff account that may read and decide the review
queue (admins cannot hold it: they stay content-blind)."""

ROLE_RANK = {"admin": 3, "auditor": 2, "staff": 1}
"""Which role wins when single sign-on maps a user's groups to several."""

KEY_ROLE = "service"
"""The role an API-key caller carries in the gateway's `Actor` (its rights are its scopes)."""

ACCESS_OPT = "access"
PUBLIC_OPT = "public"


@dataclass(frozen=True)
class Access:
    """Who may call a route: browser sessions with one of `roles`, keys with one of `scopes`.

    `rate` names the rate-limit bucket the route counts against (`inference`), if any.
    `password_change` marks the few routes an account that must change its password may use.
    `permission` is a grant the signed-in user must also hold (`reviewer`).
    """

    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    rate: Literal["inference"] | None = None
    password_change: bool = False
    permission: str | None = None


def access(
    *,
    roles: tuple[str, ...] = (),
    scopes: tuple[str, ...] = (),
    rate: Literal["inference"] | None = None,
    password_change: bool = False,
    permission: str | None = None,
) -> dict[str, Any]:
    """The `opt` of a route that needs a signed-in user or a key; unknown names are a bug."""
    unknown = (set(roles) - set(ROLES)) | (set(scopes) - set(SCOPES))
    if permission is not None and permission not in PERMISSIONS:
        unknown.add(permission)
    if unknown:
        raise ValueError(f"unknown role or scope in access rule: {sorted(unknown)}")
    return {
        ACCESS_OPT: Access(
            roles=frozenset(roles),
            scopes=frozenset(scopes),
            rate=rate,
            password_change=password_change,
            permission=permission,
        )
    }


def public() -> dict[str, Any]:
    """The `opt` of a route anyone may call (probes, sign-in pages, static assets)."""
    return {PUBLIC_OPT: True}


@dataclass(frozen=True)
class Principal:
    """Who a request is authenticated as: a signed-in user or an API key."""

    kind: Literal["user", "apikey"]
    id: str
    name: str
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    policy: str | None = None
    session_hash: str | None = None
    csrf_token: str | None = None
    must_change_password: bool = False
    permissions: frozenset[str] = field(default_factory=frozenset)
    team: str | None = None
    """A user's team; for a key, its own team, else its owner's."""

    @property
    def actor_id(self) -> str:
        """The id written to the audit trail: `user:<id>` or `apikey:<id>`."""
        return f"{self.kind}:{self.id}"

    def allowed(self, rule: Access) -> bool:
        """Whether this principal passes `rule` (role for users, any listed scope for keys)."""
        if self.kind == "user":
            if rule.permission is not None and rule.permission not in self.permissions:
                return False
            return self.role in rule.roles
        return bool(self.scopes & rule.scopes)
