"""`create_app()`: the app around the services `appliance.wiring` builds: routes, handlers,
hooks and lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from appliance import __version__
from appliance.api.admin_users import AdminUsersController
from appliance.api.audit import AuditController
from appliance.api.batches import BatchesController
from appliance.api.chat import ChatController
from appliance.api.costs import CostsController
from appliance.api.documents import DocumentsController
from appliance.api.eval import EvalController
from appliance.api.health import HealthController
from appliance.api.keys import KeysController
from appliance.api.metrics import MetricsController, work_progress
from appliance.api.models import ModelPullsController, ModelsController
from appliance.api.ollama_api import OllamaController
from appliance.api.openai_v1 import OpenAIController
from appliance.api.pii import PiiController
from appliance.api.policies import PoliciesController
from appliance.api.review import ReviewController
from appliance.api.tasks import TasksController
from appliance.api.usage import UsageController
from appliance.audit.schedule import maintain as maintain_audit
from appliance.audit.schedule import record_integrity
from appliance.audit.verify import Integrity, check_integrity
from appliance.audit.witness import parts as witness_parts
from appliance.auth.guards import enforce_access
from appliance.auth.identity import Identity
from appliance.auth.oidc import OidcClient
from appliance.auth.ratelimit import failure_throttle
from appliance.auth.roles import public
from appliance.batches.runner import sweep_batches
from appliance.config import Settings
from appliance.db.engine import (
    ensure_migrated,
    hold_single_server,
    make_engine,
    release_single_server,
)
from appliance.db.leases import periodically
from appliance.errors import ApplianceError, AuditError, ServerAlreadyRunning
from appliance.http.audit import RequestAudit
from appliance.http.errors import EXCEPTION_HANDLERS
from appliance.http.middleware import refuse_nul_characters, request_id_middleware, security_headers
from appliance.inference.base import Backend
from appliance.inference.embedded import embedded_backend
from appliance.metrics import DETECTOR_LOAD, Metrics, StateSources
from appliance.pii.detector import Detector, load_detector
from appliance.pii.pool import DetectorPool
from appliance.ui.admin import ModelPagesController, UserPagesController
from appliance.ui.audit import AuditPagesController
from appliance.ui.auth import AuthPagesController
from appliance.ui.batches import BatchPagesController
from appliance.ui.costs import CostPagesController
from appliance.ui.dashboard import DashboardController
from appliance.ui.eval import EvalPagesController
from appliance.ui.history import HistoryPagesController
from appliance.ui.models_pull import ModelPullPagesController
from appliance.ui.pages import PagesController
from appliance.ui.policies import PolicyPagesController
from appliance.ui.review import ReviewPagesController
from appliance.ui.workspace import WorkspaceController
from appliance.wiring import Appliance, build_appliance

log = logging.getLogger("appliance")


def _start_detector(settings: Settings) -> Detector:
    """The in-process detector, or a pool of warm detector processes (`detector_processes`)."""
    if settings.detector_processes == 0:
        return load_detector(settings.spacy_model, settings.phone_regions)
    return DetectorPool(
        settings.spacy_model, settings.phone_regions, processes=settings.detector_processes
    )


async def _load_detector(appliance: Appliance) -> None:
    """Load and warm Presidio off the event loop; readiness waits for it."""
    started = time.perf_counter()
    try:
        detector = await anyio.to_thread.run_sync(_start_detector, appliance.settings)
    except ApplianceError as exc:
        appliance.detector.set_failed(exc.message)
        log.error("PII detector failed to load", extra={"detail": exc.message})
        return
    DETECTOR_LOAD.set(time.perf_counter() - started)
    appliance.detector.set_ready(detector)
    log.info("PII detector ready", extra={"detail": appliance.settings.spacy_model})


async def _sweep_batches_and_reviews(appliance: Appliance) -> int:
    """Expired batch jobs, history content and review content, each on its own: one that
    fails (logged) never keeps the others' content past its retention."""
    sweeps: list[Callable[[], Awaitable[int]]] = [
        lambda: sweep_batches(appliance.batches),
        appliance.history.sweep,
        appliance.review.sweep,
    ]
    removed = 0
    for sweep in sweeps:
        try:
            removed += await sweep()
        except Exception:
            log.error("expiry sweep failed", exc_info=True)
    return removed


async def _sweep_expired(appliance: Appliance) -> int:
    """Expired documents, then batch jobs, history and review content (one sweep of the
    replica holding the `sweep.expiry` lease)."""
    removed = 0
    try:
        removed += len(await appliance.documents.sweep())
    except Exception:
        # One failing sweep must not keep the others' content past its retention.
        log.error("expiry sweep failed", exc_info=True)
    removed += await _sweep_batches_and_reviews(appliance)
    if removed:
        log.info("expired content removed", extra={"detail": str(removed)})
    return removed


def _check_audit_integrity(appliance: Appliance) -> Integrity:
    """The trail's triggers and tail, checked before serving: a failure stops start-up
    (`audit_integrity_check = "refuse"`) or keeps `/readyz` at 503 with a critical log line."""
    settings = appliance.settings
    if not witness_parts(settings.audit_witness):
        log.warning(
            "audit witness disabled (audit_witness = none): rows cut from the end of the trail "
            "or rewritten after the last checkpoint would go unnoticed"
        )
    integrity = Integrity()
    status = check_integrity(appliance.audit, witness_setting=settings.audit_witness)
    record_integrity(integrity, status)
    if not integrity.ok and settings.audit_integrity_check == "refuse":
        raise AuditError(f"refusing to start: audit trail integrity {status}")
    return integrity


def _metrics(appliance: Appliance, integrity: Integrity) -> Metrics | None:
    """The `/metrics` registry over this app's live state (None with `metrics_enabled` off)."""
    if not appliance.settings.metrics_enabled:
        return None
    return Metrics(
        StateSources(
            backends=lambda: list(appliance.registry.backends),
            detector_status=lambda: appliance.detector.status,
            integrity_status=lambda: integrity.status,
            chain_head=lambda: appliance.audit.head().seq,
            work_progress=partial(work_progress, appliance.batches, appliance.evaluation.runs),
        )
    )


def create_app(
    settings: Settings | None = None, *, backends: list[Backend] | None = None
) -> Litestar:
    """Build the app. Refuses an unmigrated database and invalid policies before serving."""
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url)
    ensure_migrated(engine)
    appliance = build_appliance(
        settings, engine, backends if backends is not None else [embedded_backend(settings)]
    )
    integrity = _check_audit_integrity(appliance)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        held = hold_single_server(settings.resolved_database_url)
        if held is not None:
            raise ServerAlreadyRunning(held)
        task = asyncio.create_task(_load_detector(appliance))
        # Embedded models start in their worker processes now; each is ready once it generated.
        appliance.registry.start()
        # Background work: with several replicas on one database, each piece is claimed with
        # a lease (`appliance.db.leases`), so every replica runs these loops and each sweep,
        # checkpoint, item, run and pull still runs once.
        audit_task = asyncio.create_task(
            maintain_audit(
                appliance.audit,
                retention_days=settings.audit_retention_days,
                integrity=integrity,
                witness_setting=settings.audit_witness,
                leases=appliance.leases,
            )
        )
        sweep_task = asyncio.create_task(
            periodically(
                lambda: _sweep_expired(appliance),
                every_s=settings.document_sweep_interval_s,
                leases=appliance.leases,
                name="sweep.expiry",
            )
        )
        batch_task = asyncio.create_task(appliance.batch_runner.run_forever())
        eval_task = asyncio.create_task(appliance.evaluation.runner.run_forever())
        pulls_task = asyncio.create_task(appliance.pulls.run_forever())
        try:
            yield
        finally:
            task.cancel()
            for background in (audit_task, sweep_task, batch_task, eval_task, pulls_task):
                background.cancel()
            await asyncio.gather(
                audit_task, sweep_task, batch_task, eval_task, pulls_task, return_exceptions=True
            )
            await appliance.pulls.aclose()
            await appliance.registry.aclose()
            appliance.detector.close()
            if identity.windows is not None:
                identity.windows.close()
            engine.dispose()
            release_single_server(settings.resolved_database_url)

    static_dir = settings.web_dir / "static"
    static_dir.mkdir(parents=True, exist_ok=True)

    identity = Identity(settings, engine, appliance.audit)
    # One audit row per request: the handler's event, or else this (see `http.audit`).
    request_audit = RequestAudit(
        appliance.audit,
        anonymous_per_minute=settings.auth_failures_per_minute,
        throttle=failure_throttle(identity.windows, "anonymous"),
    )
    app = Litestar(
        route_handlers=[
            HealthController,
            ChatController,
            PiiController,
            PoliciesController,
            OpenAIController,
            OllamaController,
            ModelsController,
            ModelPullsController,
            TasksController,
            DocumentsController,
            BatchesController,
            UsageController,
            CostsController,
            ReviewController,
            EvalController,
            AuditController,
            PagesController,
            AuthPagesController,
            WorkspaceController,
            DashboardController,
            PolicyPagesController,
            ModelPagesController,
            ModelPullPagesController,
            HistoryPagesController,
            BatchPagesController,
            UserPagesController,
            AuditPagesController,
            CostPagesController,
            ReviewPagesController,
            EvalPagesController,
            AdminUsersController,
            KeysController,
            MetricsController,
            create_static_files_router(
                path="/static", directories=[static_dir], include_in_schema=False, opt=public()
            ),
        ],
        guards=[enforce_access],
        dependencies=appliance.dependencies(),
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware, appliance.batch_runner.activity.middleware],
        before_send=[security_headers, request_audit.before_send],
        before_request=partial(refuse_nul_characters, max_json_depth=settings.max_json_depth),
        lifespan=[lifespan],
        after_exception=[request_audit.after_exception],
        request_max_body_size=settings.max_body_bytes,
        template_config=TemplateConfig(
            directory=Path(settings.web_dir / "templates"),
            engine=JinjaTemplateEngine,
            # What every page needs from the settings (base.html's idle sign-out).
            engine_callback=lambda jinja: jinja.engine.globals.update(
                session_idle_timeout_s=settings.session_idle_timeout_s
            ),
        ),
        openapi_config=OpenAPIConfig(
            title="Appliance API",
            version=__version__,
            path="/schema",
            # The document only: the HTML viewers Litestar offers load scripts from a CDN and
            # run inline scripts, and the box serves every asset itself under a strict CSP.
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
            # The API's description is public; every operation in it has its own guard.
            openapi_router=Router(path="/schema", route_handlers=[], opt=public()),
        ),
        debug=False,
        logging_config=None,
    )
    app.state.appliance = appliance
    app.state.audit_integrity = integrity
    app.state.request_audit = request_audit
    app.state.metrics = _metrics(appliance, integrity)
    app.state.identity = identity
    app.state.oidc = OidcClient(settings, engine) if settings.oidc_issuer else None
    return app
