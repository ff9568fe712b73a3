"""`/healthz` (the process answers) and `/readyz` (it can serve requests)."""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Response
from sqlalchemy import Engine

from appliance.auth.roles import public
from appliance.db.engine import ping
from appliance.gateway import DetectorHandle
from appliance.inference.registry import Registry


class HealthController(Controller):
    """Liveness and readiness probes."""

    tags = ["health"]
    opt = public()  # probes answer without credentials; they reveal no content

    @get("/healthz", summary="Liveness: the process answers", sync_to_thread=False)
    def healthz(self) -> dict[str, str]:
        """Answers without touching the database, the detector or a model."""
        return {"status": "ok"}

    @get("/readyz", summary="Readiness: database, PII detector and a backend")
    async def readyz(
        self,
        request: Request[Any, Any, Any],
        detector: NamedDependency[DetectorHandle],
        registry: NamedDependency[Registry],
        engine: NamedDependency[Engine],
    ) -> Response[dict[str, Any]]:
        """503 until the database answers, the detector is loaded and a backend is healthy, and
        while the audit trail's triggers are missing or its tail does not verify."""
        checks: dict[str, Any] = {}
        try:
            await anyio.to_thread.run_sync(ping, engine)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"failed: {type(exc).__name__}"
        checks["detector"] = detector.status
        backends: dict[str, str] = {}
        models: dict[str, str] = {}
        for backend in registry.backends:
            health = await backend.health()
            backends[backend.name] = "ok" if health.ok else f"failed: {health.detail}"
            models.update(health.models)
        checks["backends"] = backends
        integrity = getattr(request.app.state, "audit_integrity", None)
        checks["audit"] = integrity.status if integrity is not None else "unchecked"
        if models:
            # An unavailable model is named with its cause; the others keep serving.
            checks["models"] = models
        ready = (
            checks["database"] == "ok"
            and checks["detector"] == "ready"
            and any(v == "ok" for v in backends.values())
            and checks["audit"] == "ok"
        )
        return Response(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )
