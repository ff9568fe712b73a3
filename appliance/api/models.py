"""`GET /api/v1/models`: the models the appliance can route to."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency

from appliance.auth.roles import access
from appliance.services import Services


class ModelsController(Controller):
    """Model listing."""

    path = "/api/v1/models"
    tags = ["models"]
    opt = access(roles=("staff", "admin"), scopes=("chat", "tasks", "admin"))

    @get("/", summary="List models", sync_to_thread=False)
    def list_models(self, services: NamedDependency[Services]) -> dict[str, Any]:
        """Every registered model with its backend and context length."""
        return {
            "default": services.settings.default_model,
            "models": [
                {"name": m.name, "backend": m.backend, "context_length": m.context_length}
                | m.details
                for m in services.registry.models()
            ],
        }
