"""`GET /metrics`: the Prometheus exposition of one replica (see `appliance.metrics`).

Who may scrape: API keys with the `metrics` scope (what Prometheus sends as
`Authorization: Bearer`, from a `credentials_file`) and signed-in admins. A scrape that is served
writes no audit row; a refused one does (see `appliance.http.audit`).
"""

from __future__ import annotations

from typing import Any

import anyio
from litestar import Controller, Request, get
from litestar.response import Response
from sqlalchemy import Engine, func, select

from appliance.auth.roles import access
from appliance.batches.models import BatchItem, BatchJob
from appliance.errors import NotFound
from appliance.eval.models import EvalResult, EvalRun
from appliance.metrics import Metrics

UNFINISHED = ("queued", "running")
"""Statuses of jobs and runs whose items are still counted (finished ones only grow)."""


def work_progress(engine: Engine) -> dict[tuple[str, str], int]:
    """Batch and evaluation work by status, in four grouped counts on indexed columns: jobs and
    runs by status, and the items of the unfinished ones by status."""
    jobs, items = BatchJob.__table__, BatchItem.__table__  # type: ignore[attr-defined]
    runs, results = EvalRun.__table__, EvalResult.__table__  # type: ignore[attr-defined]
    statements = {
        "batch_jobs": select(jobs.c.status, func.count()).group_by(jobs.c.status),
        "batch_items": select(items.c.status, func.count())
        .join(jobs, jobs.c.id == items.c.job_id)
        .where(jobs.c.status.in_(UNFINISHED))
        .group_by(items.c.status),
        "eval_runs": select(runs.c.status, func.count()).group_by(runs.c.status),
        "eval_results": select(results.c.status, func.count())
        .join(runs, runs.c.id == results.c.run_id)
        .where(runs.c.status.in_(UNFINISHED))
        .group_by(results.c.status),
    }
    counts: dict[tuple[str, str], int] = {}
    with engine.connect() as connection:
        for kind, statement in statements.items():
            for status, count in connection.execute(statement):
                counts[(kind, str(status))] = int(count)
    return counts


class MetricsController(Controller):
    """The Prometheus scrape endpoint."""

    tags = ["operations"]

    @get(
        "/metrics",
        summary="Prometheus metrics of this replica",
        opt=access(roles=("admin",), scopes=("metrics",)),
        media_type="text/plain",
    )
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Counters, histograms and the live state, in Prometheus text format; no request
        text and no identifiers. 404 when `metrics_enabled` is off."""
        metrics: Metrics | None = request.app.state.metrics
        if metrics is None:
            raise NotFound("metrics are turned off on this appliance (metrics_enabled = false)")
        # The scrape reads the database (the chain's head, work counts): off the event loop.
        body = await anyio.to_thread.run_sync(metrics.render)
        return Response(body, media_type=metrics.content_type)
