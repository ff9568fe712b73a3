"""`POST /api/v1/tasks/{name}` and `GET /api/v1/tasks`: thin adapters over `Gateway.run_task`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage
from pydantic import BaseModel, ConfigDict, Field, model_validator

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import ApplianceError
from appliance.gateway import Gateway
from appliance.http.middleware import request_id_of
from appliance.tasks.types import TaskInput


class TaskRequestIn(BaseModel):
    """`POST /api/v1/tasks/{name}`: exactly one of `text` or `document_id`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "I loved the new release.", "params": {"labels": ["positive", "negative"]}}
            ]
        },
    )

    text: str | None = Field(default=None, min_length=1, max_length=500_000)
    document_id: str | None = Field(default=None, min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = Field(default=None, min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TaskRequestIn:
        if (self.text is None) == (self.document_id is None):
            raise ValueError("give exactly one of text or document_id")
        return self


class TasksController(Controller):
    """Task templates run through the policy path."""

    path = "/api/v1/tasks"
    tags = ["tasks"]
    opt = access(roles=("staff", "admin"), scopes=("tasks",), rate="inference")

    @get("/", summary="List task templates with their parameter and output schemas")
    async def list_tasks(self, gateway: NamedDependency[Gateway]) -> dict[str, Any]:
        """Every template."""
        return {"tasks": [t.public() for t in gateway.routing.tasks.all()]}

    @post(
        "/{name:str}",
        summary="Run a task (summarize, extract, classify, redact, ask, chat)",
        description=(
            "Runs the named template on `text` through the PII policy and the router: "
            "`{output, receipt, usage}`. The receipt's `route` says which tier and model served "
            "and why, with every escalation. With `stream: true` the result arrives as one "
            "server-sent `done` event (or `error`)."
        ),
        status_code=200,
    )
    async def run(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        data: JSONBody[TaskRequestIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """Run one task."""
        task = TaskInput(
            name=name,
            text=data.text,
            document_id=data.document_id,
            params=data.params,
            policy=data.policy,
            model=data.model,
        )
        actor = actor_for(request)
        request_id = request_id_of(request)
        if not data.stream:
            result = await gateway.run_task(actor, task, request_id=request_id)
            return Response(
                {"output": result.output, "receipt": result.receipt, "usage": result.usage}
            )

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            try:
                result = await gateway.run_task(actor, task, request_id=request_id)
            except ApplianceError as exc:
                yield ServerSentEventMessage(event="error", data=json.dumps(exc.to_dict()["error"]))
                return
            body = {"output": result.output, "receipt": result.receipt, "usage": result.usage}
            yield ServerSentEventMessage(event="done", data=json.dumps(body))

        return ServerSentEvent(events(), headers={"Cache-Control": "no-store"})
