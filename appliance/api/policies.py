"""Admin REST API for policies: list, read, create versions, activate, roll back, assign.

Every change goes through `PolicyService`, which audits it (`policy.created`,
`policy.activated`, `policy.rolled_back`, `policy.assigned`, `policy.unassigned`) exactly as the
console and the CLI do. Policies hold no personal data, so admins may read all of them.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.schemas import error_responses
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.policies.service import ChangedBy, PolicyService
from appliance.policies.store import PolicyStore, VersionInfo


class PolicyVersionIn(BaseModel):
    """A new version: the whole YAML, and why it changed."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "source": "name: hr\nentities:\n  - {entity: PERSON, action: redact}\n",
                    "comment": "stop pseudonymizing names",
                }
            ]
        },
    )

    source: str = Field(min_length=1, max_length=200_000)
    comment: str = Field(default="", max_length=1000)


class ActivateIn(BaseModel):
    """Which version to activate: its number or content hash."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")


class AssignmentIn(BaseModel):
    """Assign a policy to an API key, a team or a task; `policy: null` removes it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["key", "team", "task"]
    target: str = Field(min_length=1, max_length=200)
    policy: str | None = Field(default=None, min_length=1, max_length=100)
    allowed: list[str] | None = Field(default=None, max_length=50)
    """Other policies a request under this assignment may name (the assigned one is a floor:
    naming anything else is refused with 403 `policy_not_allowed`); null keeps the list."""


def _version(v: VersionInfo) -> dict[str, Any]:
    return {
        "number": v.number,
        "version": v.version,
        "author": v.author,
        "comment": v.comment,
        "created_at": v.created_at.isoformat(),
        "active": v.active,
    }


class PoliciesController(Controller):
    """`/api/v1/policies`: the policy console's API."""

    path = "/api/v1/policies"
    tags = ["policies"]
    opt = access(roles=("admin",), scopes=("admin",))

    @get("/", summary="List policies with their active versions", sync_to_thread=True)
    def list_policies(self, policies: NamedDependency[PolicyStore]) -> dict[str, Any]:
        """Every policy and its active version."""
        store = policies
        items = []
        for name in store.names():
            active = next(v for v in store.history(name) if v.active)
            items.append(
                {"name": name, "active": _version(active), "default": name == store.default_name}
            )
        return {"policies": items}

    @get(
        "/{name:str}",
        summary="A policy: active version, YAML and history",
        sync_to_thread=True,
        responses=error_responses(404),
    )
    def read(self, name: FromPath[str], policies: NamedDependency[PolicyStore]) -> dict[str, Any]:
        """The active version's YAML and every version's metadata."""
        store = policies
        loaded = store.get(name)
        return {
            "name": name,
            "version": loaded.version,
            "source": store.source(name, loaded.version),
            "policy": loaded.policy.model_dump(mode="json"),
            "versions": [_version(v) for v in store.history(name)],
        }

    @get(
        "/{name:str}/diff",
        summary="Unified diff between two versions",
        sync_to_thread=True,
        responses=error_responses(404),
    )
    def diff(
        self,
        name: FromPath[str],
        a: FromQuery[str],
        b: FromQuery[str],
        policies: NamedDependency[PolicyStore],
    ) -> dict[str, Any]:
        """`?a=<version>&b=<version>` (numbers or hashes)."""
        store = policies
        lines = difflib.unified_diff(
            store.source(name, a).splitlines(keepends=True),
            store.source(name, b).splitlines(keepends=True),
            fromfile=f"{name}@{a}",
            tofile=f"{name}@{b}",
        )
        return {"diff": "".join(lines)}

    @post(
        "/{name:str}/versions",
        status_code=201,
        summary="Store a new version (not active)",
        responses=error_responses(404, 422),
    )
    async def create_version(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[PolicyVersionIn],
        policy_changes: NamedDependency[PolicyService],
    ) -> dict[str, Any]:
        """Validates the YAML strictly (errors name line and field); same content is no change."""
        version = await policy_changes.create_version(
            name, data.source, by=ChangedBy.of(actor_for(request)), comment=data.comment
        )
        return _version(version)

    @post(
        "/{name:str}/activate",
        status_code=200,
        summary="Activate a version",
        responses=error_responses(404, 422),
    )
    async def activate(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[ActivateIn],
        policy_changes: NamedDependency[PolicyService],
    ) -> dict[str, Any]:
        """Requests run under this version from now on."""
        loaded = await policy_changes.activate(
            name, data.version, by=ChangedBy.of(actor_for(request))
        )
        return {"name": name, "version": loaded.version}

    @post(
        "/{name:str}/rollback",
        status_code=200,
        summary="Re-activate the previous version",
        responses=error_responses(404, 422),
    )
    async def rollback(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        policy_changes: NamedDependency[PolicyService],
    ) -> dict[str, Any]:
        """Back to the version that was active before the current one."""
        loaded = await policy_changes.rollback(name, by=ChangedBy.of(actor_for(request)))
        return {"name": name, "version": loaded.version}

    @put(
        "/assignments",
        status_code=200,
        summary="Assign a policy to a key, team or task",
        responses=error_responses(404, 422),
    )
    async def assign(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[AssignmentIn],
        policy_changes: NamedDependency[PolicyService],
    ) -> dict[str, Any]:
        """Resolution order for a request: key's bound policy, key, team, task, default."""
        await policy_changes.assign(
            data.kind,
            data.target,
            data.policy,
            by=ChangedBy.of(actor_for(request)),
            allowed=data.allowed,
        )
        return data.model_dump()
