"""`POST /api/v1/pii/analyze` and `POST /api/v1/pii/redact`: the policy path without a model."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.schemas import error_responses
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.gateway import Gateway
from appliance.http.middleware import request_id_of


class PiiTextIn(BaseModel):
    """A text to analyse or redact, under the named policy or the caller's resolved one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"text": "Call Jane Doe on 212-555-0199.", "policy": "default"}]
        },
    )

    text: str = Field(min_length=1, max_length=500_000)
    policy: str | None = Field(default=None, min_length=1, max_length=100)


class PiiController(Controller):
    """Detection and redaction under a policy. Offsets are Python string indices into `text`."""

    path = "/api/v1/pii"
    tags = ["pii"]
    opt = access(roles=("staff", "admin"), scopes=("pii",), rate="inference")

    @post(
        "/analyze",
        status_code=200,
        summary="Find identifiers and the action each would get",
        responses=error_responses(400, 404, 413, 422, 503),
    )
    async def analyze(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PiiTextIn],
        gateway: NamedDependency[Gateway],
    ) -> dict[str, Any]:
        """Entities with type, offsets, score and action; the policy name and version; the id of
        the `pii.analyzed` audit row."""
        policy, items, audit_id = await gateway.analyze(
            actor_for(request), data.text, policy=data.policy, request_id=request_id_of(request)
        )
        return {
            "entities": [
                {
                    "type": f.entity,
                    "start": f.start,
                    "end": f.end,
                    "score": round(f.score, 3),
                    "action": action,
                }
                for f, action in items
            ],
            "policy": {"name": policy.policy.name, "version": policy.version},
            "audit_id": audit_id,
        }

    @post(
        "/redact",
        status_code=200,
        summary="Apply the policy's actions to a text",
        responses=error_responses(400, 404, 413, 422, 503),
    )
    async def redact(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PiiTextIn],
        gateway: NamedDependency[Gateway],
    ) -> dict[str, Any]:
        """`{"text", "entities": [...], "receipt": {...}}`; a `block` finding is a 422."""
        return await gateway.redact(
            actor_for(request), data.text, policy=data.policy, request_id=request_id_of(request)
        )
