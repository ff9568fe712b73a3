"""Admin pages: models and routing, users and API keys.

Content-blind like the admin API: nothing here shows a user's prompts, documents or outputs.
Changes go through `Identity` (which audits them), as the admin API does.
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Template

from appliance.auth import accounts, apikeys
from appliance.auth.guards import caller_of, identity_of, principal_of
from appliance.auth.roles import ROLES, SCOPES, access
from appliance.auth.teams import check_team
from appliance.config import Settings
from appliance.errors import InvalidInput
from appliance.gateway import Gateway
from appliance.inference.balancer import BalancedBackend
from appliance.inference.pulls import ModelPulls
from appliance.inference.registry import Registry
from appliance.policies.store import PolicyStore
from appliance.ui.common import fragment, render


class ModelPagesController(Controller):
    """`/admin/models`: backends and nodes with health, models per tier, routing thresholds."""

    include_in_schema = False
    path = "/admin/models"
    opt = access(roles=("admin",))

    @get("/")
    async def models(
        self,
        request: Request[Any, Any, Any],
        registry: NamedDependency[Registry],
        gateway: NamedDependency[Gateway],
        settings: NamedDependency[Settings],
        pulls: NamedDependency[ModelPulls],
    ) -> Template:
        """The models and routing page."""
        backends = []
        for backend in registry.backends:
            health = await backend.health()
            nodes = []
            if isinstance(backend, BalancedBackend):
                for node in backend.nodes:
                    node_health = await node.backend.health()
                    nodes.append(
                        {
                            "name": node.backend.name,
                            "ok": node_health.ok,
                            "detail": node_health.detail,
                        }
                    )
            backends.append(
                {"name": backend.name, "ok": health.ok, "detail": health.detail, "nodes": nodes}
            )
        models = registry.models()
        tiers: dict[str, list[Any]] = {}
        for model in models:
            tiers.setdefault(model.tier, []).append(model)
        routing = gateway.routing
        return render(
            request,
            "models.html",
            backends=backends,
            tiers=tiers,
            default_model=settings.default_model,
            router=routing.router.config,
            rules=routing.rules,
            task_tiers={t.name: t.tier for t in routing.tasks.all()},
            reference_model=routing.costs.reference_model,
            pullable=pulls.pullable(),
            pulls=[j.public() for j in await anyio.to_thread.run_sync(pulls.jobs)],
        )


def _users_context(request: Request[Any, Any, Any], policies: PolicyStore) -> dict[str, Any]:
    engine = identity_of(request).engine
    users = accounts.list_users(engine)
    names = {u.id: u.username for u in users}
    keys = [apikeys.public_view(k) for k in apikeys.list_keys(engine)]
    for key in keys:
        key["owner"] = names.get(str(key["owner_id"]), "")
    return {
        "users": users,
        "keys": keys,
        "roles": ROLES,
        "scopes": SCOPES,
        "policies": policies.names(),
        "me": principal_of(request).id,
    }


class UserPagesController(Controller):
    """`/admin/users`: accounts (role, team, disable, revoke sessions) and API keys (create, team,
    revoke)."""

    include_in_schema = False
    path = "/admin/users"
    opt = access(roles=("admin",))

    @get("/", sync_to_thread=True)
    def index(
        self, request: Request[Any, Any, Any], policies: NamedDependency[PolicyStore]
    ) -> Template:
        """Users and keys."""
        return render(
            request, "users.html", **_users_context(request, policies), note=None, secret=None
        )

    async def _users(
        self, request: Request[Any, Any, Any], policies: PolicyStore, note: str, **extra: Any
    ) -> Template:
        context = await anyio.to_thread.run_sync(lambda: _users_context(request, policies))
        return fragment("_users.html", **context, note=note, **extra)

    async def _keys(
        self, request: Request[Any, Any, Any], policies: PolicyStore, note: str, **extra: Any
    ) -> Template:
        context = await anyio.to_thread.run_sync(lambda: _users_context(request, policies))
        return fragment("_keys.html", **context, note=note, **extra)

    @post("/create", status_code=200)
    async def create_user(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        data: URLEncodedBody[dict[str, str]],
    ) -> Template:
        """A local account; its first password is shown once and must be changed at sign-in."""
        identity = identity_of(request)
        username = data.get("username", "").strip()
        role = data.get("role", "staff")
        team = data.get("team")
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        user, password = await anyio.to_thread.run_sync(
            lambda: identity.create_user_sync(
                username=username,
                role=role,
                password=None,
                team=team,
                actor=actor,
                caller=caller,
            )
        )
        return await self._users(
            request,
            policies,
            f"Account {user.username} created.",
            secret={"label": f"First password of {user.username}", "value": password},
        )

    @post("/{user_id:str}/update", status_code=200)
    async def update_user(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        user_id: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
    ) -> Template:
        """Role, team, reviewer, disable or enable; sessions end when rights change."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        role = data.get("role")
        state = data.get("state")
        reviewer = data.get("reviewer") == "on"
        team = data.get("team")

        def apply() -> str:
            user = accounts.find_user(identity.engine, user_id)
            if role and role != user.role:
                user = identity.set_role_sync(user.id, role, actor=actor, caller=caller)
            # The box is only shown for staff; a role change away from staff drops it anyway.
            if user.role == "staff" and reviewer != user.reviewer:
                identity.set_reviewer_sync(user.id, reviewer, actor=actor, caller=caller)
            if team is not None and check_team(team) != user.team:
                identity.set_team_sync(user.id, team, actor=actor, caller=caller)
            if state == "disabled" and not user.disabled:
                identity.disable_sync(user.id, actor=actor, caller=caller)
            elif state == "active" and user.disabled:
                accounts.set_disabled(identity.engine, user.id, False)
            return user.username

        username = await anyio.to_thread.run_sync(apply)
        return await self._users(request, policies, f"Account {username} updated.", secret=None)

    @post("/{user_id:str}/revoke", status_code=200)
    async def revoke(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        user_id: FromPath[str],
    ) -> Template:
        """Sign the user out everywhere and revoke the keys they own."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)

        def apply() -> tuple[str, int, int]:
            user = accounts.find_user(identity.engine, user_id)
            ended, keys = identity.revoke_access_sync(user.id, actor=actor, caller=caller)
            return user.username, ended, keys

        username, ended, keys = await anyio.to_thread.run_sync(apply)
        return await self._users(
            request,
            policies,
            f"{username}: {ended} sessions ended, {keys} keys revoked.",
            secret=None,
        )

    @post("/keys", status_code=200)
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        data: URLEncodedBody[dict[str, Any]],
    ) -> Template:
        """A new API key, shown once."""
        identity = identity_of(request)
        principal = principal_of(request)
        caller = caller_of(request)
        name = str(data.get("name", "")).strip()
        if not name or len(name) > 100:
            raise InvalidInput("give the key a name (at most 100 characters)", field="name")
        raw_scopes = data.get("scopes", [])
        scopes = [raw_scopes] if isinstance(raw_scopes, str) else list(raw_scopes)
        if not scopes:
            raise InvalidInput("choose at least one scope", field="scopes")
        policy = str(data.get("policy") or "") or None
        if policy is not None:
            policies.get(policy)
        expires = str(data.get("expires_days") or "").strip()
        if expires and (not (expires.isascii() and expires.isdigit()) or int(expires) < 1):
            raise InvalidInput("expiry must be a whole number of days", field="expires_days")
        row, key = await anyio.to_thread.run_sync(
            lambda: identity.create_key_sync(
                name=name,
                scopes=scopes,
                policy=policy,
                expires_days=int(expires) if expires else None,
                owner_id=principal.id,
                actor=principal.actor_id,
                caller=caller,
                team=str(data.get("team") or "") or None,
            )
        )
        return await self._keys(
            request,
            policies,
            f"Key {row.name} created.",
            secret={"label": f"API key {row.name} (shown once: copy it now)", "value": key},
        )

    @post("/keys/{key_id:str}/team", status_code=200)
    async def key_team(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
        policies: NamedDependency[PolicyStore],
    ) -> Template:
        """Set a key's own team (empty: its owner's team applies)."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        team = data.get("team")
        row = await anyio.to_thread.run_sync(
            lambda: identity.set_key_team_sync(key_id, team, actor=actor, caller=caller)
        )
        return await self._keys(request, policies, f"Key {row.name} updated.", secret=None)

    @post("/keys/{key_id:str}/revoke", status_code=200)
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        policies: NamedDependency[PolicyStore],
        key_id: FromPath[str],
    ) -> Template:
        """Revoke a key at once."""
        identity = identity_of(request)
        actor = principal_of(request).actor_id
        caller = caller_of(request)
        row = await anyio.to_thread.run_sync(
            lambda: identity.revoke_key_sync(key_id, actor=actor, caller=caller)
        )
        return await self._keys(request, policies, f"Key {row.name} revoked.", secret=None)
