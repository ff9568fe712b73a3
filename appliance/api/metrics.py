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

from appliance.auth.roles import access
from appliance.batches.service import Batches
from appliance.errors import NotFound
from appliance.eval.runs import EvalRuns
from appliance.metrics import Metrics


def work_progress(batches: Batches, runs: EvalRuns) -> dict[tuple[str, str], int]:
    """Batch and evaluation work by (kind, status), as `StateSources.work_progress` names it:
    jobs and runs by status, and the items and results of the open ones by status."""
    progress: dict[tuple[str, str], int] = {}
    for (parents, children), counts in (
        (("batch_jobs", "batch_items"), batches.counts()),
        (("eval_runs", "eval_results"), runs.counts()),
    ):
        progress |= {(parents, status): n for status, n in counts.parents.items()}
        progress |= {(children, status): n for status, n in counts.children.items()}
    return progress


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
