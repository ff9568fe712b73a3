"""The batch runner: items through the request path's `run_task` (the gateway, handed in as a
`TaskRunner`), at most N at a time, yielding between.

Interactive requests keep their latency because every item runs as background work
(`appliance.inference.gate.background`): it starts only after interactive traffic was quiet for
`batch_quiet_s`, waits behind interactive callers at a model's gate, and (on the embedded engine)
pauses between generation steps while an interactive request is in flight. Transient refusals
(model busy, detector loading, timeouts) are retried after a wait instead of failing the item.

Each worker claims one item at a time with a lease of its own (`Batches.claim` under
`appliance.db.leases.leased`), renewed while the item runs; so several replicas on one database
work on one job together, and an item whose replica died is run by another once its lease runs
out. Such an item has run (in part) twice: its request may have written an audit row before the
crash, and the second run writes its own, under the same request id (`batch:<job>:<seq>`). The
item keeps one result, the second's. A worker that finds its lease taken over (it stalled past
`lease_s`) stops its item; a result it still reports is dropped. An item claimed `MAX_ATTEMPTS`
times without finishing (it took its replica down each time) fails instead of taking down the
next one. A graceful stop gives the items in flight back at once.
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
from appliance.db.leases import leased
from appliance.db.models import utcnow
from appliance.errors import ApplianceError
from appliance.inference.gate import background
from appliance.tasks.patience import patiently
from appliance.tasks.types import TaskInput, TaskResult

if TYPE_CHECKING:
    from appliance.batches.models import BatchJob
    from appliance.batches.service import Batches, ClaimedItem

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Claims of one item before it fails without running again (each ended with its replica)."""


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
        """The runner's loop (a task of the app lifespan; cancelled at shutdown). After a pass
        that ran nothing (no job, or every item held by other replicas) it waits `idle_s`, or
        less when a job is created here."""
        while True:
            self._wake.clear()
            ran = 0
            # After a restart the detector loads in the background; items would only fail.
            while self.detector.status == "loading":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            try:
                jobs = await anyio.to_thread.run_sync(self.batches.open_jobs)
                for job in jobs:
                    ran += await self.run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("batch runner failed; retrying", exc_info=True)
            if not ran:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    async def run_job(self, job: BatchJob) -> int:
        """Run the items of `job` that nobody else runs, `concurrency` at a time, until none is
        left to claim; then mark the job completed if every item is done. Returns how many
        items ran here."""
        batches = self.batches
        await anyio.to_thread.run_sync(batches.begin, job.id)
        actor = replace(Actor(**job.actor), purpose=Purpose.BATCH)
        ran = 0

        # Stopped mid-item (a shutdown): the item goes back at once, its claim uncounted.
        uncounted = {"attempts": batches.leases.table.c.attempts - 1}

        async def worker() -> None:
            nonlocal ran
            while True:
                await self.activity.wait_quiet(self.quiet_s)
                # Claimed after the wait: a job deleted (or expired) meanwhile has no items.
                claim = partial(batches.claim, job.id)
                async with leased(
                    batches.leases, claim, what="batch item", give_back=uncounted
                ) as held:
                    if held is None:
                        return
                    await self._run_claimed(job, actor, held.work, held.lease.token)
                ran += not held.lost
                # Yield the model: anyone already waiting for its slot goes next.
                await asyncio.sleep(self.pause_s)

        async with anyio.create_task_group() as group:
            for _ in range(self.concurrency):
                group.start_soon(worker)
        if await anyio.to_thread.run_sync(batches.complete_if_done, job.id):
            log.info("batch job completed", extra={"detail": job.id})
        return ran

    async def _run_claimed(
        self, job: BatchJob, actor: Actor, item: ClaimedItem, holder: str
    ) -> None:
        if item.attempts > MAX_ATTEMPTS:
            log.error(
                "batch item abandoned: its server stopped while running it each time",
                extra={"detail": f"{job.id}:{item.seq}"},
            )
            error = ApplianceError(
                f"the item was started {MAX_ATTEMPTS} times and its server stopped each time; "
                "it is not run again"
            )
            await self._finish(job.id, item.seq, holder, error=error)
            return
        await self._run_item(job, actor, item.seq, item.input, holder)

    async def _run_item(
        self, job: BatchJob, actor: Actor, seq: int, item: dict[str, Any], holder: str
    ) -> None:
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
            await self._finish(job.id, seq, holder, error=exc)
            return
        except Exception:
            log.error("batch item failed unexpectedly", exc_info=True)
            await self._finish(job.id, seq, holder, error=ApplianceError("the item failed"))
            return
        await self._keep(
            job.id,
            seq,
            holder=holder,
            status="done",
            result={"output": result.output, "receipt": result.receipt},
            error_code=None,
            audit_id=result.receipt.get("audit_id"),
        )

    async def _finish(self, job_id: str, seq: int, holder: str, *, error: ApplianceError) -> None:
        body = error.to_dict()["error"]
        audit = body.get("receipt", {}).get("audit_id") if isinstance(body, dict) else None
        await self._keep(
            job_id,
            seq,
            holder=holder,
            status="failed",
            result={"error": {"code": error.code, "message": error.message}},
            error_code=error.code,
            audit_id=audit,
        )

    async def _keep(self, job_id: str, seq: int, **outcome: Any) -> None:
        """Commit an item's outcome; one whose lease passed to another replica is dropped."""
        stored = await anyio.to_thread.run_sync(
            partial(self.batches.finish_item, job_id, seq, **outcome)
        )
        if not stored:
            log.warning(
                "batch item result dropped: its lease passed to another replica",
                extra={"detail": f"{job_id}:{seq}"},
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
