"""Interactive work first at a model's gate, and batch items run as background work."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.batches.runner import BatchRunner
from appliance.batches.service import ITEMS, ClaimedItem
from appliance.db.leases import Lease, LeaseTerms
from appliance.inference.gate import GenerationGate, background, is_background


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_interactive_waiter_goes_before_an_earlier_background_waiter() -> None:
    gate = GenerationGate(name="tiny", queue_size=10, retry_after=1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.slot():
            order.append("holder")
            await release.wait()

    async def use(name: str, *, in_background: bool) -> None:
        if in_background:
            with background():
                async with gate.slot():
                    order.append(name)
        else:
            async with gate.slot():
                order.append(name)

    holder = asyncio.create_task(hold())
    await settle()
    batch_1 = asyncio.create_task(use("batch 1", in_background=True))
    batch_2 = asyncio.create_task(use("batch 2", in_background=True))
    await settle()
    person = asyncio.create_task(use("interactive", in_background=False))
    await settle()
    assert gate.waiting == 3
    release.set()
    await asyncio.gather(holder, batch_1, batch_2, person)
    assert order == ["holder", "interactive", "batch 1", "batch 2"]
    assert not gate.busy and gate.waiting == 0


async def test_cancelled_background_waiter_leaves_the_line_clean() -> None:
    gate = GenerationGate(name="tiny", queue_size=10, retry_after=1)
    release = asyncio.Event()
    entered: list[str] = []

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    async def batch() -> None:
        with background():
            async with gate.slot():
                entered.append("batch")

    holder = asyncio.create_task(hold())
    await settle()
    waiter = asyncio.create_task(batch())
    await settle()
    waiter.cancel()
    await settle()
    assert gate.waiting == 0
    release.set()
    await holder
    assert entered == [] and not gate.busy
    async with gate.slot():  # free again
        assert gate.busy


def test_background_mark_is_scoped() -> None:
    assert not is_background()
    with background():
        assert is_background()
    assert not is_background()


class _Detector:
    status = "ready"


class _Gateway:
    """Records whether each task ran as background work."""

    def __init__(self) -> None:
        self.marks: list[bool] = []

    async def run_task(self, actor: Any, task: Any, *, request_id: str) -> Any:
        self.marks.append(is_background())

        class Result:
            output = {"label": "x"}
            receipt = {"audit_id": request_id}

        return Result()


class _Leases:
    """Leases that are always held (one process, no database)."""

    terms = LeaseTerms(holder="test")
    table = ITEMS

    def renew(self, leases: set[Lease]) -> set[Lease]:
        return set(leases)

    def release(self, leases: set[Lease], **_: Any) -> None:
        return None


class _Batches:
    """Two pending items in memory; records what the runner claims and finishes."""

    leases = _Leases()

    def __init__(self) -> None:
        self.items = {0: {"text": "a"}, 1: {"text": "b"}}
        self.claimed: list[int] = []
        self.finished: list[tuple[int, str]] = []
        self.marks: list[str] = []

    def claim(self, job_id: str) -> tuple[ClaimedItem, Lease] | None:
        left = [seq for seq in self.items if seq not in self.claimed]
        if not left:
            return None
        self.claimed.append(left[0])
        item = ClaimedItem(seq=left[0], input=self.items[left[0]], attempts=1)
        return item, Lease((job_id, left[0]), "test:1")

    def begin(self, job_id: str) -> None:
        self.marks.append("running")

    def complete_if_done(self, job_id: str) -> bool:
        self.marks.append("completed")
        return True

    def finish_item(self, job_id: str, seq: int, *, status: str, **_: Any) -> bool:
        self.finished.append((seq, status))
        return True


class _Job:
    id = "job"
    actor = {"id": "u", "role": "staff"}
    task = "classify"
    params: dict[str, Any] = {"labels": ["x", "y"]}
    policy = None
    model = None


async def test_runner_runs_every_item_as_background_work() -> None:
    batches, gateway = _Batches(), _Gateway()
    runner = BatchRunner(
        batches,  # type: ignore[arg-type]
        task_runner=gateway,
        detector=_Detector(),
        concurrency=1,
        pause_s=0.0,
    )
    await runner.run_job(_Job())  # type: ignore[arg-type]
    assert gateway.marks == [True, True]
    assert batches.finished == [(0, "done"), (1, "done")]
    assert batches.marks == ["running", "completed"]
    assert not is_background()  # the mark does not leak out of the item
