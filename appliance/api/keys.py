"""`/api/v1/admin/keys`: create (shown once), list, set the team of and revoke API keys (admin
only)."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field

from appliance.auth import apikeys
from appliance.auth.guards import caller_of, identity_of, principal_of
from appliance.auth.roles import access
from appliance.policies.store import PolicyStore


class KeyCreateIn(BaseModel):
    """A new key: a name, its scopes, optionally a bound policy and a lifetime in days."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)
    policy: str | None = None
    expires_days: int | None = Field(default=None, gt=0, le=apikeys.MAX_EXPIRES_DAYS)
    team: str | None = Field(default=None, max_length=100)
    """The key's own team; without one its owner's team applies."""


class KeyPatchIn(BaseModel):
    """A change of the key's own team (`""` or null: its owner's team applies)."""

    model_config = ConfigDict(extra="forbid")
    team: str | None = Field(max_length=100)


class KeysController(Controller):
    """API key administration."""

    path = "/api/v1/admin/keys"
    tags = ["admin"]
    opt = access(roles=("admin",), scopes=("admin",))

    @get("/", summary="List API keys")
    async def list_keys(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Every key with scopes, expiry, revocation and last use (never the key)."""
        identity = identity_of(request)
        rows = await anyio.to_thread.run_sync(lambda: apikeys.list_keys(identity.engine))
        return {"keys": [apikeys.public_view(r) for r in rows]}

    @post("/", summary="Create an API key", status_code=201)
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[KeyCreateIn],
        policies: NamedDependency[PolicyStore],
    ) -> dict[str, Any]:
        """Create a key; the key itself is in this answer only."""
        identity = identity_of(request)
        principal = principal_of(request)
        caller = caller_of(request)
        if data.policy is not None:
            policies.get(data.policy)  # PolicyNotFound if unknown
        row, key = await anyio.to_thread.run_sync(
            lambda: identity.create_key_sync(
                name=data.name,
                scopes=data.scopes,
                policy=data.policy,
                expires_days=data.expires_days,
                owner_id=principal.id if principal.kind == "user" else None,
                actor=principal.actor_id,
                caller=caller,
                team=data.team,
            )
        )
        return {"key": key, **apikeys.public_view(row)}

    @patch("/{key_id:str}", summary="Set an API key's team")
    async def update_key(
        self, request: Request[Any, Any, Any], key_id: FromPath[str], data: JSONBody[KeyPatchIn]
    ) -> dict[str, Any]:
        """The key's own team (audited `apikey.team_changed`); applies from its next request."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        row = await anyio.to_thread.run_sync(
            lambda: identity.set_key_team_sync(key_id, data.team, actor=actor, caller=caller)
        )
        return apikeys.public_view(row)

    @delete("/{key_id:str}", summary="Revoke an API key", status_code=200)
    async def revoke_key(
        self, request: Request[Any, Any, Any], key_id: FromPath[str]
    ) -> dict[str, Any]:
        """Revoke at once; the next request with the key gets 401."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        row = await anyio.to_thread.run_sync(
            lambda: identity.revoke_key_sync(key_id, actor=actor, caller=caller)
        )
        return apikeys.public_view(apikeys.find(identity.engine, row.id))
