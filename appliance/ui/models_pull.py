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
from appliance.inference.pulls import ModelPulls
from appliance.ui.common import fragment


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
        pulls: NamedDependency[ModelPulls],
    ) -> Template:
        """Start a pull; answers the job's progress partial (errors come back as toasts)."""
        job = await pulls.start(
            actor_for(request), backend=data.get("backend", ""), model=data.get("model", "")
        )
        return fragment("_pull.html", job=job.public())

    @get("/{pull_id:str}", sync_to_thread=True)  # reads the database
    def progress(self, pull_id: FromPath[str], pulls: NamedDependency[ModelPulls]) -> Template:
        """The job's progress partial; it stops polling once the pull has ended."""
        return fragment("_pull.html", job=pulls.get(pull_id).public())
