"""The batch runner: items through the request path's `run_task` (the gateway, handed in as a
`TaskRunner`), at most N at a time, yielding between.

Interactive requests keep their latency because every item runs as background work
(`appliance.inference.gate.background`): it starts only after interactive traffic was quiet for
`batch_quiet_s`, waits behind interactive callers at a model's gate, and (on the embedded engine)
pauses between generation steps while an interactive request is in flight. Transient refusals
(model busy, detector loading, timeouts) are retried after a wait instead of failing the item.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from appliance.auth.actor import Actor, Purpose
from appliance.batches.pacing import InteractiveTraffic
from appliance.db.models import utcnow
from appliance.errors import ApplianceError
from appliance.inference.gate import background
from appliance.tasks.patience import patiently
from appliance.tasks.types import TaskInput, TaskResult

if TYPE_CHECKING:
    from appliance.batches.models import BatchJob
    from appliance.batches.service import Batches

log = logging.getLogger(__name__)

_CHUNK = 50


class TaskRunner(Protocol):
    """The request path as batch items use it (the app hands in the gateway)."""

    async def run_task(self, actor: Actor, task: TaskInput, *, request_id: str) -> TaskResult:
        """Run one task input under the caller's policy, audited like any request."""
        ...


class DetectorStatus(Protocol):
    """The PII detector's state: items wait while it is `loading` (after a restart)."""

    @property
    def status(self) -> str: ...


class BatchRunner:
    """Runs open jobs in creation order until none is left, then waits for the next."""

    def __init__(
        self,
        batches: Batches,
        *,
        task_runner: TaskRunner,
        detector: DetectorStatus,
        concurrency: int,
        pause_s: float,
        quiet_s: float = 0.0,
        activity: InteractiveTraffic | None = None,
    ) -> None:
        self.batches = batches
        self.task_runner = task_runner
        self.detector = detector
        self.concurrency = concurrency
        self.pause_s = pause_s
        self.quiet_s = quiet_s
        self.activity = activity or InteractiveTraffic()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the runner a job was created."""
        self._wake.set()

    async def run_forever(self, *, idle_s: float = 2.0) -> None:
        """The runner's loop (a task of the app lifespan; cancelled at shutdown)."""
        while True:
            self._wake.clear()
            jobs: list[BatchJob] = []
            # After a restart the detector loads in the background; items would only fail.
            while self.detector.status == "loading":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            try:
                jobs = await anyio.to_thread.run_sync(self.batches.open_jobs)
                for job in jobs:
                    await self.run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("batch runner failed; retrying", exc_info=True)
            if not jobs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    async def run_job(self, job: BatchJob) -> None:
        """Run every unfinished item of `job`, then mark it completed."""
        batches = self.batches
        await anyio.to_thread.run_sync(batches.mark, job.id, "running")
        actor = replace(Actor(**job.actor), purpose=Purpose.BATCH)
        while True:
            items = await anyio.to_thread.run_sync(lambda: batches.pending(job.id, limit=_CHUNK))
            if not items:
                break
            queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
            for item in items:
                queue.put_nowait(item)

            async def worker(queue: asyncio.Queue[tuple[int, dict[str, Any]]] = queue) -> None:
                while not queue.empty():
                    seq, item = queue.get_nowait()
                    await self.activity.wait_quiet(self.quiet_s)
                    # The job may have been deleted (or expired) since its items were read.
                    if not await anyio.to_thread.run_sync(batches.is_pending, job.id, seq):
                        continue
                    await self._run_item(job, actor, seq, item)
                    # Yield the model: anyone already waiting for its slot goes next.
                    await asyncio.sleep(self.pause_s)

            async with anyio.create_task_group() as group:
                for _ in range(min(self.concurrency, len(items))):
                    group.start_soon(worker)
        await anyio.to_thread.run_sync(batches.mark, job.id, "completed")

    async def _run_item(self, job: BatchJob, actor: Actor, seq: int, item: dict[str, Any]) -> None:
        task = TaskInput(
            name=job.task,
            text=item.get("text"),
            document_id=item.get("document_id"),
            params=job.params | item.get("params", {}),
            policy=job.policy,
            model=job.model,
        )
        request_id = f"batch:{job.id}:{seq}"
        task_runner = self.task_runner
        try:
            with background():
                result = await patiently(
                    lambda: task_runner.run_task(actor, task, request_id=request_id)
                )
        except ApplianceError as exc:
            await self._finish(job.id, seq, error=exc)
            return
        except Exception:
            log.error("batch item failed unexpectedly", exc_info=True)
            await self._finish(job.id, seq, error=ApplianceError("the item failed"))
            return
        await anyio.to_thread.run_sync(
            partial(
                self.batches.finish_item,
                job.id,
                seq,
                status="done",
                result={"output": result.output, "receipt": result.receipt},
                error_code=None,
                audit_id=result.receipt.get("audit_id"),
            )
        )

    async def _finish(self, job_id: str, seq: int, *, error: ApplianceError) -> None:
        body = error.to_dict()["error"]
        audit = body.get("receipt", {}).get("audit_id") if isinstance(body, dict) else None
        await anyio.to_thread.run_sync(
            lambda: self.batches.finish_item(
                job_id,
                seq,
                status="failed",
                result={"error": {"code": error.code, "message": error.message}},
                error_code=error.code,
                audit_id=audit,
            )
        )


async def sweep_batches(batches: Batches) -> int:
    """Remove expired jobs with their sealed inputs and results; returns how many."""
    removed = 0
    for job_id in await anyio.to_thread.run_sync(batches.expired, utcnow()):
        if await anyio.to_thread.run_sync(partial(batches.delete, None, job_id, scrub_after=False)):
            removed += 1
    if removed or batches.scrub_pending:
        # Once for all, after the commits; also when a scrub was left unfinished (a restart).
        await anyio.to_thread.run_sync(batches.scrub)
    return removed
