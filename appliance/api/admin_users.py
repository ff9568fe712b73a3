"""`/api/v1/admin/users`: accounts, roles, teams, disabling, revoking sessions and keys (admin
only).

Content-blind: nothing here returns a user's documents, prompts or outputs.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, get, patch, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field

from appliance.auth import accounts
from appliance.auth.guards import caller_of, identity_of, principal_of
from appliance.auth.roles import access
from appliance.db.models import User


class UserCreateIn(BaseModel):
    """A new local account; without `password` one is generated and returned once."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=150)
    role: str = "staff"
    password: str | None = None
    team: str | None = Field(default=None, max_length=100)
    """The team whose policy assignment the user's requests run under."""


class UserPatchIn(BaseModel):
    """A role change and/or disabling (each also ends the user's sessions), the reviewer
    permission, or the team (`""` or null with the key present removes it)."""

    model_config = ConfigDict(extra="forbid")
    role: str | None = None
    disabled: bool | None = None
    reviewer: bool | None = None
    """The reviewer permission (staff only): may read and decide the review queue."""
    team: str | None = Field(default=None, max_length=100)
    """The user's team; only applied when the field is sent."""


def user_view(user: User) -> dict[str, Any]:
    """What the admin API shows of an account (never the password hash)."""
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "reviewer": user.reviewer,
        "team": user.team,
        "disabled": user.disabled,
        "must_change_password": user.must_change_password,
        "sso": user.oidc_subject is not None,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


class AdminUsersController(Controller):
    """User administration."""

    path = "/api/v1/admin/users"
    tags = ["admin"]
    opt = access(roles=("admin",), scopes=("admin",))

    @get("/", summary="List accounts")
    async def list_users(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Every account with role and state."""
        identity = identity_of(request)
        users = await anyio.to_thread.run_sync(lambda: accounts.list_users(identity.engine))
        return {"users": [user_view(u) for u in users]}

    @post("/", summary="Create a local account", status_code=201)
    async def create_user(
        self, request: Request[Any, Any, Any], data: JSONBody[UserCreateIn]
    ) -> dict[str, Any]:
        """Create an account; the initial password is in the answer, once."""
        identity = identity_of(request)
        principal = principal_of(request)
        caller = caller_of(request)
        user, password = await anyio.to_thread.run_sync(
            lambda: identity.create_user_sync(
                username=data.username,
                role=data.role,
                password=data.password,
                team=data.team,
                actor=principal.actor_id,
                caller=caller,
            )
        )
        return {"user": user_view(user), "password": password}

    @patch("/{user_id:str}", summary="Change role, team or reviewer permission, or disable")
    async def update_user(
        self, request: Request[Any, Any, Any], user_id: FromPath[str], data: JSONBody[UserPatchIn]
    ) -> dict[str, Any]:
        """Role changes and disabling take effect at once: sessions and keys end."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)

        def apply() -> User:
            user = accounts.find_user(identity.engine, user_id)
            if data.role is not None:
                user = identity.set_role_sync(user.id, data.role, actor=actor, caller=caller)
            if data.reviewer is not None:
                user = identity.set_reviewer_sync(
                    user.id, data.reviewer, actor=actor, caller=caller
                )
            if "team" in data.model_fields_set:
                user = identity.set_team_sync(user.id, data.team, actor=actor, caller=caller)
            if data.disabled is True:
                user = identity.disable_sync(user.id, actor=actor, caller=caller)
            elif data.disabled is False:
                accounts.set_disabled(identity.engine, user.id, False)
                user = accounts.find_user(identity.engine, user.id)
            return user

        return {"user": user_view(await anyio.to_thread.run_sync(apply))}

    @post(
        "/{user_id:str}/revoke", summary="End every session and key of an account", status_code=200
    )
    async def revoke(
        self, request: Request[Any, Any, Any], user_id: FromPath[str]
    ) -> dict[str, int]:
        """Sign the user out everywhere and revoke the keys they own."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)

        def apply() -> tuple[int, int]:
            user = accounts.find_user(identity.engine, user_id)
            return identity.revoke_access_sync(user.id, actor=actor, caller=caller)

        ended, keys = await anyio.to_thread.run_sync(apply)
        return {"sessions_ended": ended, "keys_revoked": keys}
