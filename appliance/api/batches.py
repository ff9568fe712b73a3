"""`/api/v1/batches`: a JSONL or CSV file of task inputs becomes a job run in the background.

The job runs each item through `Gateway.run_task` (policy, PII, model, audit per item) at the
pace of `batch_concurrency`; progress and results are read back here by the job's owner only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import anyio
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery
from litestar.response import Response

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.batches.inputs import Format, parse_items
from appliance.batches.runner import BatchRunner
from appliance.batches.service import Batches, results_csv, results_jsonl
from appliance.config import Settings
from appliance.errors import InvalidInput, NotFound, PayloadTooLarge

UPLOAD_CEILING_BYTES = 101_000_000
"""Body ceiling of the upload route; `batch_max_bytes` (at most 100 MB) is the real limit."""


def _text_field(data: dict[str, Any], name: str, *, max_length: int) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidInput(f"`{name}` must be text of at most {max_length} characters", field=name)
    return value


class BatchesController(Controller):
    """Batch jobs of one task over many inputs."""

    path = "/api/v1/batches"
    tags = ["batches"]
    opt = access(roles=("staff", "admin"), scopes=("tasks",))

    @post(
        "/",
        summary="Start a batch job from a JSONL or CSV file of task inputs",
        description=(
            "Multipart form: `file` (JSONL objects or CSV with a header; each item has exactly "
            "one of `text` or `document_id`, optionally `id` and `params`), `task` (template "
            "name), optional `params` (JSON object for every item), `policy`, `model`, `format` "
            "(`jsonl` or `csv`; read from the content when absent). Answers 202 with the job."
        ),
        status_code=202,
        request_max_body_size=UPLOAD_CEILING_BYTES,
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
        settings: NamedDependency[Settings],
        batch_runner: NamedDependency[BatchRunner],
        batches: NamedDependency[Batches],
    ) -> dict[str, Any]:
        """Validate the whole file, store the job, wake the runner."""
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the inputs as the multipart field `file`", field="file")
        task = _text_field(data, "task", max_length=50)
        if task is None:
            raise InvalidInput("name the task to run in the field `task`", field="task")
        raw_params = _text_field(data, "params", max_length=100_000)
        params: Any = {}
        if raw_params is not None:
            try:
                params = json.loads(raw_params)
            except (ValueError, RecursionError):
                raise InvalidInput("`params` must be a JSON object", field="params") from None
            if not isinstance(params, dict):
                raise InvalidInput("`params` must be a JSON object", field="params")
        fmt = _text_field(data, "format", max_length=10)
        if fmt not in (None, "jsonl", "csv"):
            raise InvalidInput("`format` must be jsonl or csv", field="format")
        content = await upload.read()
        if len(content) > settings.batch_max_bytes:
            raise PayloadTooLarge(
                f"the batch file has {len(content)} bytes; at most {settings.batch_max_bytes}",
                field="file",
            )
        chosen: Format | None = fmt  # type: ignore[assignment]
        items = await anyio.to_thread.run_sync(
            lambda: parse_items(content, fmt=chosen, max_items=settings.batch_max_items)
        )
        actor = actor_for(request)
        policy = _text_field(data, "policy", max_length=100)
        model = _text_field(data, "model", max_length=200)
        job = await anyio.to_thread.run_sync(
            lambda: batches.create(
                actor, task=task, params=params, policy=policy, model=model, items=items
            )
        )
        batch_runner.wake()
        return job

    @get("/{job_id:str}", summary="Progress of one of your batch jobs: counts, rate, ETA")
    async def status(
        self,
        job_id: FromPath[str],
        request: Request[Any, Any, Any],
        batches: NamedDependency[Batches],
    ) -> dict[str, Any]:
        """Counts by state, items per second over the last minutes, seconds left."""
        owner = actor_for(request).id
        return await anyio.to_thread.run_sync(batches.status, owner, job_id)

    @get("/{job_id:str}/results", summary="Results of one of your batch jobs, JSONL or CSV")
    async def results(
        self,
        job_id: FromPath[str],
        request: Request[Any, Any, Any],
        batches: NamedDependency[Batches],
        format: FromQuery[Literal["jsonl", "csv"]] = "jsonl",
    ) -> Response[str]:
        """One line (or row) per item in input order; unfinished items say `pending`."""
        owner = actor_for(request).id
        results = await anyio.to_thread.run_sync(batches.results, owner, job_id)
        if format == "csv":
            return Response(results_csv(results), media_type="text/csv; charset=utf-8")
        return Response(results_jsonl(results), media_type="application/x-ndjson")

    @delete(
        "/{job_id:str}", summary="Delete one of your batch jobs with its results", status_code=204
    )
    async def delete_job(
        self,
        job_id: FromPath[str],
        request: Request[Any, Any, Any],
        batches: NamedDependency[Batches],
    ) -> None:
        """Remove the job, its sealed inputs and results."""
        owner = actor_for(request).id
        if not await anyio.to_thread.run_sync(batches.delete, owner, job_id):
            raise NotFound(f"batch '{job_id}' does not exist", field="id")
