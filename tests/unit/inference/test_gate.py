"""GenerationGate: one generation per model, a bounded wait queue, and a clean count on cancel."""

from __future__ import annotations

import asyncio

import pytest

from appliance.errors import BackendBusy
from appliance.inference.gate import GenerationGate


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


class Holder:
    """Enters the gate's slot and stays until released."""

    def __init__(self, gate: GenerationGate, log: list[str], name: str) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.task = asyncio.create_task(self._run(gate, log, name))

    async def _run(self, gate: GenerationGate, log: list[str], name: str) -> None:
        async with gate.slot():
            log.append(f"enter {name}")
            self.entered.set()
            await self.release.wait()
            log.append(f"leave {name}")


def make_gate(queue_size: int = 2, retry_after: int = 7) -> GenerationGate:
    return GenerationGate(name="tiny", queue_size=queue_size, retry_after=retry_after)


async def test_free_gate_is_entered_at_once() -> None:
    gate = make_gate()
    assert not gate.busy
    async with gate.slot():
        assert gate.busy
        assert gate.waiting == 0
    assert not gate.busy


async def test_one_holder_at_a_time_in_arrival_order() -> None:
    gate = make_gate(queue_size=5)
    log: list[str] = []
    holders = [Holder(gate, log, str(n)) for n in range(3)]
    await settle()
    assert log == ["enter 0"]
    assert gate.busy
    assert gate.waiting == 2
    for n, holder in enumerate(holders):
        await holder.entered.wait()
        await settle()
        assert log[-1] == f"enter {n}"
        assert log.count("enter " + str(n + 1)) == 0  # the next one is still waiting
        holder.release.set()
        await holder.task
    assert log == ["enter 0", "leave 0", "enter 1", "leave 1", "enter 2", "leave 2"]
    assert not gate.busy
    assert gate.waiting == 0


async def test_queue_size_callers_may_wait_and_the_next_is_refused() -> None:
    gate = make_gate(queue_size=2, retry_after=7)
    log: list[str] = []
    holder = Holder(gate, log, "h")
    waiters = [Holder(gate, log, f"w{n}") for n in range(2)]
    await settle()
    assert gate.waiting == 2
    with pytest.raises(BackendBusy) as info:
        async with gate.slot():
            pytest.fail("a full queue must not admit another caller")
    assert info.value.retry_after == 7
    assert "'tiny'" in info.value.message
    assert info.value.status_code == 503
    assert gate.waiting == 2  # the refused caller was never counted
    for h in (holder, *waiters):
        h.release.set()
    await asyncio.gather(holder.task, *(w.task for w in waiters))
    assert log == ["enter h", "leave h", "enter w0", "leave w0", "enter w1", "leave w1"]


async def test_queue_size_zero_refuses_while_busy() -> None:
    gate = make_gate(queue_size=0, retry_after=3)
    async with gate.slot():
        with pytest.raises(BackendBusy) as info:
            async with gate.slot():
                pytest.fail("unreachable")
        assert info.value.retry_after == 3
    async with gate.slot():  # free again: admitted
        assert gate.busy


async def test_refused_caller_is_admitted_once_a_place_frees() -> None:
    gate = make_gate(queue_size=1)
    log: list[str] = []
    holder = Holder(gate, log, "h")
    waiter = Holder(gate, log, "w")
    await settle()
    with pytest.raises(BackendBusy):
        async with gate.slot():
            pass
    holder.release.set()
    await holder.task
    await waiter.entered.wait()
    assert gate.waiting == 0
    late = Holder(gate, log, "late")  # one waiting place is free again
    await settle()
    assert gate.waiting == 1
    waiter.release.set()
    late.release.set()
    await asyncio.gather(waiter.task, late.task)
    assert log == ["enter h", "leave h", "enter w", "leave w", "enter late", "leave late"]


async def test_cancelled_waiters_leave_the_count_at_zero() -> None:
    gate = make_gate(queue_size=3)
    log: list[str] = []
    holder = Holder(gate, log, "h")
    waiters = [Holder(gate, log, f"w{n}") for n in range(3)]
    await settle()
    assert gate.waiting == 3
    for waiter in waiters:
        waiter.task.cancel()
    results = await asyncio.gather(*(w.task for w in waiters), return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert gate.waiting == 0
    assert gate.busy  # the holder still has it
    holder.release.set()
    await holder.task
    assert not gate.busy
    assert log == ["enter h", "leave h"]
    # The gate is fully usable afterwards: a full queue's worth may wait again.
    again = [Holder(gate, log, f"a{n}") for n in range(4)]
    await settle()
    assert gate.waiting == 3
    for h in again:
        h.release.set()
    await asyncio.gather(*(h.task for h in again))
    assert gate.waiting == 0
    assert not gate.busy


async def test_cancelled_holder_releases_the_slot() -> None:
    gate = make_gate()
    log: list[str] = []
    holder = Holder(gate, log, "h")
    waiter = Holder(gate, log, "w")
    await holder.entered.wait()
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    await waiter.entered.wait()
    assert gate.waiting == 0
    waiter.release.set()
    await waiter.task
    assert not gate.busy


async def test_error_inside_the_slot_releases_it() -> None:
    gate = make_gate()
    with pytest.raises(RuntimeError, match="boom"):
        async with gate.slot():
            raise RuntimeError("boom")
    assert not gate.busy
    assert gate.waiting == 0


async def test_waiter_cancelled_by_timeout_is_not_counted() -> None:
    gate = make_gate(queue_size=1)
    async with gate.slot():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01), gate.slot():
                pytest.fail("unreachable")
        assert gate.waiting == 0
        # The freed place can be taken by someone else.
        log: list[str] = []
        waiter = Holder(gate, log, "w")
        await settle()
        assert gate.waiting == 1
    await waiter.entered.wait()
    waiter.release.set()
    await waiter.task
    assert not gate.busy
