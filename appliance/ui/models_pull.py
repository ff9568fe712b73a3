"""`/admin/models/pulls`: start a model pull from the models page and watch its progress bar.

The partial `_pull.html` polls itself (htmx `every 1s`) while the pull runs and stops polling
once it has succeeded or failed; the work itself is `ModelPulls`, as for the REST API.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, URLEncodedBody
from litestar.response import Template

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import NotFound
from appliance.inference.pulls import ModelPulls
from appliance.services import Services
from appliance.ui.common import fragment


def _pulls(services: Services) -> ModelPulls:
    if services.pulls is None:  # pragma: no cover - every app built by create_app has one
        raise NotFound("model pulls are not available", field="backend")
    return services.pulls


class ModelPullPagesController(Controller):
    """Partials of the pull control on `/admin/models`."""

    include_in_schema = False
    path = "/admin/models/pulls"
    opt = access(roles=("admin",))

    @post("/", status_code=200)
    async def start(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[dict[str, str]],
        services: NamedDependency[Services],
    ) -> Template:
        """Start a pull; answers the job's progress partial (errors come back as toasts)."""
        job = await _pulls(services).start(
            actor_for(request), backend=data.get("backend", ""), model=data.get("model", "")
        )
        return fragment("_pull.html", job=job.public())

    @get("/{pull_id:str}", sync_to_thread=False)
    def progress(self, pull_id: FromPath[str], services: NamedDependency[Services]) -> Template:
        """The job's progress partial; it stops polling once the pull has ended."""
        return fragment("_pull.html", job=_pulls(services).get(pull_id).public())
