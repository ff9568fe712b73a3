"""`/api/v1/models`: the models the appliance can route to, and admin pulls with progress."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.schemas import error_responses
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.config import Settings
from appliance.inference.pulls import ModelPulls
from appliance.inference.registry import Registry


class PullIn(BaseModel):
    """Pull `model` on an Ollama backend: a pool name (every node) or one node's name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"backend": "ollama", "model": "llama3.2:3b"}]},
    )

    backend: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=200)


class ModelsController(Controller):
    """Model listing."""

    path = "/api/v1/models"
    tags = ["models"]
    opt = access(roles=("staff", "admin"), scopes=("chat", "tasks", "admin"))

    @get("/", summary="List models", sync_to_thread=False)
    def list_models(
        self, settings: NamedDependency[Settings], registry: NamedDependency[Registry]
    ) -> dict[str, Any]:
        """Every registered model with its backend and context length."""
        return {
            "default": settings.default_model,
            "models": [
                {"name": m.name, "backend": m.backend, "context_length": m.context_length}
                | m.details
                for m in registry.models()
            ],
        }


class ModelPullsController(Controller):
    """Admin pulls of models onto Ollama backends, polled for progress."""

    path = "/api/v1/models/pulls"
    tags = ["models"]
    opt = access(roles=("admin",), scopes=("admin",))

    @post(
        "/",
        status_code=202,
        summary="Start pulling a model on an Ollama backend",
        description=(
            "Answers 202 with the pull job at once; poll `GET /api/v1/models/pulls/{pull_id}` "
            "for `status` (`running`, `succeeded`, `failed`), `phase` (Ollama's status line) "
            "and `percent`. The embedded engine cannot pull: 422 naming `backend`. A second "
            "pull of the same model on the same backend while one runs: 409 naming `model`."
        ),
        responses=error_responses(400, 422),
    )
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PullIn],
        pulls: NamedDependency[ModelPulls],
    ) -> dict[str, Any]:
        """Start the pull (audited `model.pull_started`; `model.pulled` when it ends)."""
        job = await pulls.start(actor_for(request), backend=data.backend, model=data.model)
        return job.public()

    # Pulls are rows of the database (any replica's): read in a worker thread.
    @get("/", summary="Model pulls, newest first", sync_to_thread=True)
    def list_pulls(self, pulls: NamedDependency[ModelPulls]) -> dict[str, Any]:
        """Running and recently finished pulls, and the backends that can pull."""
        return {
            "backends": pulls.pullable(),
            "pulls": [job.public() for job in pulls.jobs()],
        }

    @get(
        "/{pull_id:str}",
        summary="Progress of one model pull",
        sync_to_thread=True,
        responses=error_responses(404),
    )
    def get_pull(
        self, pull_id: FromPath[str], pulls: NamedDependency[ModelPulls]
    ) -> dict[str, Any]:
        """Status, Ollama's current phase, bytes and percent of one pull."""
        return pulls.get(pull_id).public()
