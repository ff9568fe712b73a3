"""`/batches`: the caller's own batch jobs with progress bars, and a form to start one.

The list polls itself (htmx `every 2s`) while a job is queued or running and stops once every
job has ended. Jobs are the same as `POST /api/v1/batches` makes (`appliance.batches`): each item
runs through the gateway; results download from the REST API, for the job's owner only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Template
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.batches.inputs import parse_items
from appliance.batches.models import BatchJob
from appliance.batches.runner import BatchRunner
from appliance.batches.service import Batches
from appliance.config import Settings
from appliance.errors import InvalidInput, PayloadTooLarge
from appliance.ui.common import STAFF_ROLES, fragment, render

BATCH_TASKS = ("classify", "extract", "summarize", "redact", "ask")
"""Narrow tasks that suit a batch."""

SHOWN = 50
"""Most recent jobs listed."""


def _jobs(engine: Engine, batches: Batches, owner: str) -> list[dict[str, Any]]:
    with Session(engine) as session:
        ids = session.exec(
            select(BatchJob.id)
            .where(BatchJob.owner == owner)
            .order_by(col(BatchJob.created_at).desc())
            .limit(SHOWN)
        ).all()
    jobs = []
    for job_id in ids:
        status = batches.status(owner, job_id)
        counts = status["counts"]
        finished = counts["done"] + counts["failed"]
        status["percent"] = int(100 * finished / counts["total"]) if counts["total"] else 100
        jobs.append(status)
    return jobs


def _active(jobs: list[dict[str, Any]]) -> bool:
    return any(j["status"] in ("queued", "running") for j in jobs)


class BatchPagesController(Controller):
    """The batch jobs page and its self-refreshing list."""

    include_in_schema = False
    path = "/batches"
    opt = access(roles=STAFF_ROLES)

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        engine: NamedDependency[Engine],
        batches: NamedDependency[Batches],
    ) -> Template:
        """The page: the upload form and the caller's jobs."""
        owner = actor_for(request).id
        jobs = await anyio.to_thread.run_sync(_jobs, engine, batches, owner)
        return render(
            request, "batches.html", jobs=jobs, active=_active(jobs), tasks=BATCH_TASKS, note=None
        )

    @get("/rows")
    async def rows(
        self,
        request: Request[Any, Any, Any],
        engine: NamedDependency[Engine],
        batches: NamedDependency[Batches],
    ) -> Template:
        """The job list alone (polled while a job runs)."""
        owner = actor_for(request).id
        jobs = await anyio.to_thread.run_sync(_jobs, engine, batches, owner)
        return fragment("_batches.html", jobs=jobs, active=_active(jobs), note=None)

    @post("/", status_code=200, request_max_body_size=101_000_000)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        settings: NamedDependency[Settings],
        engine: NamedDependency[Engine],
        batches: NamedDependency[Batches],
        batch_runner: NamedDependency[BatchRunner],
    ) -> Template:
        """Start a job from an uploaded JSONL or CSV file; answers the refreshed list."""
        upload = data.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidInput("choose a JSONL or CSV file of inputs", field="file")
        task = str(data.get("task") or "")
        if task not in BATCH_TASKS:
            raise InvalidInput(f"choose one of: {', '.join(BATCH_TASKS)}", field="task")
        params: dict[str, Any] = {}
        labels = [p.strip() for p in str(data.get("labels") or "").split(",") if p.strip()]
        if task == "classify":
            params["labels"] = labels
        raw = str(data.get("params") or "").strip()
        if raw:
            try:
                extra = json.loads(raw)
            except (ValueError, RecursionError):
                raise InvalidInput("parameters must be a JSON object", field="params") from None
            if not isinstance(extra, dict):
                raise InvalidInput("parameters must be a JSON object", field="params")
            params |= extra
        content = await upload.read()
        if len(content) > settings.batch_max_bytes:
            raise PayloadTooLarge(
                f"the file has {len(content)} bytes; at most {settings.batch_max_bytes}",
                field="file",
            )
        items = await anyio.to_thread.run_sync(
            lambda: parse_items(content, fmt=None, max_items=settings.batch_max_items)
        )
        actor = actor_for(request)
        job = await anyio.to_thread.run_sync(
            lambda: batches.create(
                actor, task=task, params=params, policy=None, model=None, items=items
            )
        )
        batch_runner.wake()
        jobs = await anyio.to_thread.run_sync(_jobs, engine, batches, actor.id)
        return fragment(
            "_batches.html",
            jobs=jobs,
            active=_active(jobs),
            note=f"Batch {job['id'][:8]} started with {len(items)} items.",
        )
