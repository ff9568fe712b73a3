"""Batch items claimed with leases, on SQLite and PostgreSQL, by runners with their own engines
and holder ids (as replicas): they share one job without running an item twice, the job is
completed once, a stale holder's result is dropped (also when the new claim is its own
process's), and a stopped runner gives its items back."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from appliance.batches.models import BatchItem, BatchJob
from appliance.batches.runner import MAX_ATTEMPTS, BatchRunner
from appliance.batches.service import ITEMS, Batches
from appliance.db.engine import session_scope
from appliance.db.leases import LeaseTerms
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer

SEALER = Sealer(os.urandom(32))
OWNER = "user:a"


class _Detector:
    status = "ready"


class _Gateway:
    """The request path as the runner uses it: answers each item with its text, after `delay`
    (or never, while `hold` is unset); records which items it saw."""

    def __init__(self, *, delay: float = 0.002, hold: asyncio.Event | None = None) -> None:
        self.delay = delay
        self.hold = hold
        self.seen: list[str] = []

    async def run_task(self, actor: Any, task: Any, *, request_id: str) -> Any:
        self.seen.append(request_id)
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(self.delay)

        class Result:
            output = {"text": task.text}
            receipt = {"audit_id": request_id[-32:]}
            usage: dict[str, Any] = {}

        return Result()


class CountingBatches(Batches):
    """Batches that count how often this replica marked a job completed."""

    completed = 0

    def complete_if_done(self, job_id: str) -> bool:
        marked = super().complete_if_done(job_id)
        self.completed += int(marked)
        return marked


def replica(engine: Engine, holder: str) -> CountingBatches:
    return CountingBatches(
        engine,
        SEALER,
        # Claims, results and status need no task catalog or policies.
        tasks=None,  # type: ignore[arg-type]
        policies=None,  # type: ignore[arg-type]
        policy_requests=None,  # type: ignore[arg-type]
        default_retention=timedelta(hours=1),
        lease=LeaseTerms(holder=holder, lease_s=30),
    )


def runner(batches: Batches, gateway: _Gateway, *, concurrency: int = 2) -> BatchRunner:
    return BatchRunner(
        batches,
        task_runner=gateway,
        detector=_Detector(),
        concurrency=concurrency,
        pause_s=0.0,
    )


def create_job(engine: Engine, count: int) -> BatchJob:
    job_id, now = uuid.uuid4().hex, utcnow()
    job = BatchJob(
        id=job_id,
        owner=OWNER,
        actor={"id": OWNER, "role": "staff"},
        task="classify",
        status="queued",
        total=count,
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    with session_scope(engine) as session:
        session.add(job)
        session.flush()
        session.add_all(
            BatchItem(
                job_id=job_id,
                seq=seq,
                status="pending",
                input_sealed=SEALER.seal(
                    json.dumps({"text": f"item {seq}"}).encode(), bound_to=f"batch:{job_id}:{seq}"
                ),
            )
            for seq in range(count)
        )
    return job


async def test_three_runners_share_a_job_each_item_runs_once_and_it_completes_once(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job = create_job(engine, 60)
    replicas = [replica(other_engine(), f"replica-{i}") for i in range(3)]
    gateways = [_Gateway() for _ in replicas]

    ran = await asyncio.gather(
        *(runner(b, g).run_job(job) for b, g in zip(replicas, gateways, strict=True))
    )

    seen = [request for g in gateways for request in g.seen]
    assert sorted(seen) == sorted(f"batch:{job.id}:{seq}" for seq in range(60))
    assert sum(ran) == 60 and min(ran) > 0  # every replica ran some, none ran one twice
    assert sum(b.completed for b in replicas) == 1
    status = replicas[0].status(OWNER, job.id)
    assert status["status"] == "completed"
    assert status["counts"] == {"total": 60, "done": 60, "failed": 0, "pending": 0}
    results = replicas[0].results(OWNER, job.id)
    assert [r["output"]["text"] for r in results] == [f"item {seq}" for seq in range(60)]
    with engine.connect() as connection:
        leases = connection.execute(select(ITEMS.c.lease_holder, ITEMS.c.attempts)).all()
    assert set(leases) == {(None, 1)}  # a finished item holds no lease; each claimed once


def test_a_stale_holders_result_is_dropped(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job = create_job(engine, 1)
    stalled, live = replica(engine, "stalled"), replica(other_engine(), "live")
    first = stalled.claim(job.id)
    assert first is not None
    expire(engine)  # the stalled replica missed its renewals
    taken = live.claim(job.id)
    assert taken is not None and taken[0].attempts == 2

    late = finish(stalled, job, first, "late")
    kept = finish(live, job, taken, "kept")
    again = finish(live, job, taken, "again", status="failed")

    assert (late, kept, again) == (False, True, False)
    [result] = live.results(OWNER, job.id)
    assert (result["status"], result["output"]) == ("done", "kept")


def finish(
    batches: Batches, job: BatchJob, claimed: Any, output: str, *, status: str = "done"
) -> bool:
    """`finish_item` of item 0 under the lease of `claimed` (as `claim` returned it)."""
    return batches.finish_item(
        job.id,
        0,
        holder=claimed[1].token,
        status=status,
        result={"output": output},
        error_code=None if status == "done" else "x",
        audit_id=None,
    )


def expire(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(update(ITEMS).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def test_a_lapsed_claim_cannot_finish_an_item_its_own_process_claimed_again(
    engine: Engine,
) -> None:
    job = create_job(engine, 1)
    batches = replica(engine, "one-process")  # two workers of one process share it
    first = batches.claim(job.id)
    assert first is not None
    expire(engine)  # the first worker stalled past its lease
    second = batches.claim(job.id)
    assert second is not None

    assert batches.leases.renew({first[1]}) == set()
    assert (finish(batches, job, first, "late"), finish(batches, job, second, "kept")) == (
        False,
        True,
    )
    [result] = batches.results(OWNER, job.id)
    assert result["output"] == "kept"


async def test_a_stopped_runner_gives_its_items_back_at_once(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job = create_job(engine, 3)
    stopping = replica(engine, "stopping")
    blocked = _Gateway(hold=asyncio.Event())  # never answers
    task = asyncio.create_task(runner(stopping, blocked, concurrency=2).run_job(job))
    while len(blocked.seen) < 2:  # noqa: ASYNC110 - a test polls what the runner did
        await asyncio.sleep(0.01)

    task.cancel()  # a graceful shutdown cancels the runner mid-item
    await asyncio.gather(task, return_exceptions=True)

    with engine.connect() as connection:
        rows = connection.execute(select(ITEMS.c.lease_holder, ITEMS.c.attempts)).all()
    assert set(rows) == {(None, 0)}  # nothing held, and the interrupted claims are not counted
    other = replica(other_engine(), "other")
    done = await runner(other, _Gateway()).run_job(job)
    assert done == 3 and other.completed == 1


async def test_an_item_whose_replica_stopped_each_time_fails_without_running(
    engine: Engine,
) -> None:
    job = create_job(engine, 2)
    with engine.begin() as connection:
        connection.execute(update(ITEMS).where(ITEMS.c.seq == 0).values(attempts=MAX_ATTEMPTS))
    batches, gateway = replica(engine, "next"), _Gateway()

    await runner(batches, gateway, concurrency=1).run_job(job)

    assert gateway.seen == [f"batch:{job.id}:1"]
    first, second = batches.results(OWNER, job.id)
    assert first["status"] == "failed" and "stopped each time" in first["error"]["message"]
    assert second["status"] == "done"
    assert batches.status(OWNER, job.id)["status"] == "completed"
