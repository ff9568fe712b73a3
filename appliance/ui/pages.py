"""The start page and its status partial. Pages extend base.html; partials start with `_`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template

from appliance.auth.roles import ROLES, access
from appliance.gateway import DetectorHandle
from appliance.inference.registry import Registry
from appliance.policies.store import PolicyStore


class PagesController(Controller):
    """Pages for people."""

    include_in_schema = False
    opt = access(roles=ROLES)

    @get("/", sync_to_thread=False)
    def index(
        self, registry: NamedDependency[Registry], policies: NamedDependency[PolicyStore]
    ) -> Template:
        """The start page."""
        return Template(
            template_name="index.html",
            context={"policy": policies.get().ref, "models": registry.names()},
        )

    @get("/ui/status")
    async def status(
        self,
        request: Request[Any, Any, Any],
        registry: NamedDependency[Registry],
        detector: NamedDependency[DetectorHandle],
    ) -> Template:
        """Readiness as a partial, refreshed by htmx."""
        backends = {b.name: (await b.health()).ok for b in registry.backends}
        return Template(
            template_name="_status.html",
            context={"detector": detector.status, "backends": backends},
        )
