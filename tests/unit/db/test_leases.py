"""Leases on rows and by name, on SQLite and PostgreSQL, each claimer with its own engine (as
replicas have): claims never overlap, an expired lease is taken over, a stale holder can renew
nothing (also when the new claim is its own process's), `leased` keeps, stops and gives back
(off the event loop, through a second cancellation; also what a cancelled claim took), a
renewal racing the work's own finish is no loss, and a named lease has one holder at a time."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, select, update

from appliance.batches.models import BatchItem, BatchJob
from appliance.batches.service import ITEMS
from appliance.db.engine import session_scope
from appliance.db.leases import (
    LEASES,
    Lease,
    LeaseTerms,
    NamedLeases,
    RowLeases,
    kept,
    leased,
    periodically,
)
from appliance.db.models import utcnow
from tests.support.leases import GatedLeases


def job_with_items(engine: Engine, count: int) -> str:
    """A batch job with `count` pending items (their inputs are never opened here)."""
    job_id, now = uuid.uuid4().hex, utcnow()
    with session_scope(engine) as session:
        session.add(
            BatchJob(
                id=job_id,
                owner="user:a",
                task="classify",
                status="queued",
                total=count,
                created_at=now,
                expires_at=now + timedelta(hours=1),
            )
        )
        session.flush()
        session.add_all(
            BatchItem(job_id=job_id, seq=seq, status="pending", input_sealed=b"sealed")
            for seq in range(count)
        )
    return job_id


def item_leases(engine: Engine, holder: str) -> RowLeases:
    return RowLeases(engine, ITEMS, LeaseTerms(holder=holder, lease_s=30))


def claim(leases: RowLeases, job_id: str, *, limit: int = 1, **where: Any) -> list[Any]:
    conditions = [ITEMS.c.job_id == job_id, ITEMS.c.status == "pending"]
    conditions += [ITEMS.c[name] == value for name, value in where.items()]
    return leases.claim(
        *conditions,
        order_by=[ITEMS.c.seq],
        limit=limit,
        values={"attempts": ITEMS.c.attempts + 1},
    )


def expire_items(engine: Engine) -> None:
    """Every item lease runs out now, as when its holder died `lease_s` ago."""
    with engine.begin() as connection:
        connection.execute(
            update(ITEMS)
            .where(ITEMS.c.lease_holder.is_not(None))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_two_claimers_on_separate_engines_never_get_the_same_item(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job_id = job_with_items(engine, 120)
    claimers = [item_leases(other_engine(), f"replica-{i}") for i in range(2)]
    got: dict[int, list[int]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        while rows := claim(claimers[i], job_id, limit=3):
            got[i].extend(row.seq for row in rows)
            time.sleep(0.005)  # the items run (SQLite's busy wait lets the other in meanwhile)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert sorted(got[0] + got[1]) == list(range(120))  # every item once: no overlap, no loss
    assert got[0] and got[1], "both claimers took part"
    with engine.connect() as connection:
        holders = dict(connection.execute(select(ITEMS.c.seq, ITEMS.c.lease_holder)).all())
    for i, seqs in got.items():
        assert {holders[seq].rsplit(":", 1)[0] for seq in seqs} == {f"replica-{i}"}
    assert len(set(holders.values())) == len(holders) // 3  # a token per claim of three


def test_an_expired_lease_is_taken_over_and_the_old_holder_renews_nothing(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job_id = job_with_items(engine, 2)
    first, second = item_leases(engine, "first"), item_leases(other_engine(), "second")
    [row] = claim(first, job_id, seq=0)
    lease = first.lease_of(row)
    assert row.attempts == 1 and row.lease_holder.startswith("first:")
    assert claim(second, job_id, seq=0) == []  # held: not claimable
    assert first.renew({lease}) == {lease}

    expire_items(engine)  # the first holder died: it renewed nothing since
    [again] = claim(second, job_id, seq=0)
    taken = second.lease_of(again)

    assert (again.seq, again.attempts) == (0, 2) and again.lease_holder.startswith("second:")
    assert first.renew({lease}) == set()  # the stale holder holds nothing now
    assert second.renew({taken}) == {taken}
    first.release({lease})  # and cannot give away what it no longer holds
    assert claim(first, job_id, seq=0) == []


def test_a_claim_lapsed_and_claimed_again_in_the_same_process_holds_nothing(
    engine: Engine,
) -> None:
    job_id = job_with_items(engine, 1)
    leases = item_leases(engine, "one-process")  # both workers share the process's terms
    [row] = claim(leases, job_id)
    first = leases.lease_of(row)
    expire_items(engine)  # the first worker stalled past its lease
    [again] = claim(leases, job_id)
    second = leases.lease_of(again)

    assert first.key == second.key and first.token != second.token
    assert leases.renew({first}) == set()
    leases.release({first})  # a no-op: the row is the second claim's
    with engine.begin() as connection:
        finished = connection.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == job_id, leases.held(first.token))
            .values(status="done")
        )
    assert finished.rowcount == 0
    assert leases.renew({second}) == {second}


def test_a_released_item_is_claimable_at_once(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job_id = job_with_items(engine, 1)
    first, second = item_leases(engine, "first"), item_leases(other_engine(), "second")
    [row] = claim(first, job_id)

    first.release({first.lease_of(row)}, values={"attempts": ITEMS.c.attempts - 1})

    [again] = claim(second, job_id)
    assert again.lease_holder.startswith("second:") and again.attempts == 1


def expire_named(engine: Engine, name: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(LEASES)
            .where(LEASES.c.name == name)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_named_lease_has_one_holder_at_a_time(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    one = NamedLeases(engine, LeaseTerms(holder="one"))
    two = NamedLeases(other_engine(), LeaseTerms(holder="two"))
    assert one.take("sweep.expiry")
    assert not two.take("sweep.expiry")
    assert one.take("sweep.expiry")  # renewed by its holder
    assert two.take("audit.maintenance")  # another name is another lease
    assert one.holder("sweep.expiry") == "one"

    expire_named(engine, "sweep.expiry")
    assert one.holder("sweep.expiry") is None
    assert two.take("sweep.expiry")
    assert not one.take("sweep.expiry")
    one.release("sweep.expiry")  # not its lease any more: nothing happens
    assert two.holder("sweep.expiry") == "two"
    two.release("sweep.expiry")
    assert one.take("sweep.expiry")


def test_of_many_takers_at_once_one_gets_the_named_lease(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    takers = [NamedLeases(other_engine(), LeaseTerms(holder=f"replica-{i}")) for i in range(4)]
    taken: list[bool] = []

    def take(i: int, name: str, start: threading.Barrier) -> None:
        start.wait()
        taken[i] = takers[i].take(name)

    for round_ in range(5):
        name, start = f"duty-{round_}", threading.Barrier(len(takers))
        taken[:] = [False] * len(takers)
        threads = [threading.Thread(target=take, args=(i, name, start)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert taken.count(True) == 1, (name, taken)
        assert takers[0].holder(name) == f"replica-{taken.index(True)}"


async def test_a_kept_lease_reports_its_loss_once() -> None:
    answers = iter([True, True, False, True])
    lost: list[str] = []

    async with kept(lambda: next(answers), every_s=0.01, on_lost=lambda: lost.append("lost")):
        for _ in range(3000):  # a hang guard, not a speed target
            if lost:
                break
            await asyncio.sleep(0.01)

    assert lost == ["lost"]
    assert next(answers) is True  # no renewal after the loss


async def test_periodic_work_runs_on_the_holder_only_until_it_stops(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    runs = {"one": 0, "two": 0}

    def loop(holder: str, leases_engine: Engine) -> asyncio.Task[None]:
        async def work() -> None:
            runs[holder] += 1

        leases = NamedLeases(leases_engine, LeaseTerms(holder=holder, lease_s=30))
        return asyncio.create_task(
            periodically(work, every_s=0.05, leases=leases, name="sweep.expiry")
        )

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(600):  # a hang guard, not a speed target
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out: {runs}")

    one = loop("one", engine)
    await until(lambda: runs["one"] >= 3)
    two = loop("two", other_engine())
    seen = runs["one"]
    await until(lambda: runs["one"] >= seen + 5)  # `two` had as many turns meanwhile
    assert runs["two"] == 0  # the holder renews; the other waits

    one.cancel()  # a graceful stop gives the lease back
    await asyncio.gather(one, return_exceptions=True)
    ran_before = runs["one"]
    await until(lambda: runs["two"] >= 3)
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)

    assert runs["one"] == ran_before


def holder_and_attempts(engine: Engine) -> tuple[str | None, int]:
    with engine.connect() as connection:
        row = connection.execute(select(ITEMS.c.lease_holder, ITEMS.c.attempts)).one()
    return row.lease_holder, row.attempts


def claim_one(leases: RowLeases, job_id: str) -> Callable[[], tuple[int, Lease] | None]:
    def take() -> tuple[int, Lease] | None:
        rows = claim(leases, job_id)
        return (rows[0].seq, leases.lease_of(rows[0])) if rows else None

    return take


async def test_leased_work_is_stopped_when_its_lease_passes_to_another(engine: Engine) -> None:
    job_id = job_with_items(engine, 1)
    leases = RowLeases(engine, ITEMS, LeaseTerms(holder="slow", lease_s=0.3))
    reached_end = False

    async with leased(leases, claim_one(leases, job_id), what="batch item") as held:
        assert held is not None and held.work == 0
        with engine.begin() as connection:  # another replica took the item over
            connection.execute(update(ITEMS).values(lease_holder="other"))
        await asyncio.sleep(60)  # stopped at the next renewal (every 0.1 s), not after this
        reached_end = True

    assert held.lost and not reached_end
    assert holder_and_attempts(engine) == ("other", 1)  # not given back: it is the other's


async def test_leased_work_stopped_early_is_given_back_and_none_is_yielded_when_all_is_held(
    engine: Engine,
) -> None:
    job_id = job_with_items(engine, 1)
    leases = item_leases(engine, "stopping")
    inside = asyncio.Event()
    uncounted = {"attempts": ITEMS.c.attempts - 1}

    async def work() -> None:
        async with leased(
            leases, claim_one(leases, job_id), what="batch item", give_back=uncounted
        ) as held:
            assert held is not None
            async with leased(leases, claim_one(leases, job_id), what="batch item") as none:
                assert none is None  # the only item is held
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await asyncio.wait_for(inside.wait(), timeout=30)
    task.cancel()  # a shutdown
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    assert holder_and_attempts(engine) == (None, 0)


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(1200):  # a hang guard, not a speed target
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("timed out")


async def test_work_stopped_early_is_given_back_off_the_event_loop_through_a_second_cancel(
    engine: Engine,
) -> None:
    job_id = job_with_items(engine, 1)
    leases = GatedLeases(engine, ITEMS, LeaseTerms(holder="stopping", lease_s=30))
    leases.go.set()  # the claim runs at once
    inside = asyncio.Event()

    async def work() -> None:
        async with leased(leases, claim_one(leases, job_id), what="batch item"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await asyncio.wait_for(inside.wait(), timeout=30)
    leases.go.clear()
    leases.entered.clear()
    task.cancel()  # a shutdown; the release then hangs on the database
    await eventually(leases.entered.is_set)
    await asyncio.sleep(0.05)  # the event loop runs on while the release waits
    task.cancel()  # a second cancellation does not abandon the release
    await asyncio.sleep(0.05)
    assert not task.done()
    leases.go.set()
    await asyncio.gather(task, return_exceptions=True)

    assert task.cancelled()
    assert leases.threads[-1] != threading.get_ident()
    assert holder_and_attempts(engine) == (None, 1)


async def test_a_claim_cancelled_while_it_runs_gives_back_what_it_took(engine: Engine) -> None:
    job_id = job_with_items(engine, 1)
    leases = GatedLeases(engine, ITEMS, LeaseTerms(holder="stopping", lease_s=30))
    uncounted = {"attempts": ITEMS.c.attempts - 1}
    ran = False

    async def work() -> None:
        nonlocal ran
        async with leased(
            leases, claim_one(leases, job_id), what="batch item", give_back=uncounted
        ):
            ran = True

    task = asyncio.create_task(work())
    await eventually(leases.entered.is_set)  # the claim waits in its thread
    task.cancel()  # a shutdown, as `Task.cancel()` stops the app's runners
    await asyncio.sleep(0.05)
    leases.go.set()  # the claim commits after the cancellation
    await asyncio.gather(task, return_exceptions=True)
    await eventually(lambda: len(leases.threads) == 2)  # claimed, then given back

    assert task.cancelled() and not ran
    assert holder_and_attempts(engine) == (None, 0)  # free at once, its claim uncounted


async def test_a_renewal_racing_the_works_own_finish_is_no_loss(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = job_with_items(engine, 1)
    leases = RowLeases(engine, ITEMS, LeaseTerms(holder="finishing", lease_s=0.3))

    async with leased(leases, claim_one(leases, job_id), what="batch item") as held:
        assert held is not None
        with anyio.CancelScope(shield=True):  # the finish, as work shields its last step
            with engine.begin() as connection:  # the conditional finish clears the lease
                connection.execute(
                    update(ITEMS)
                    .where(leases.held(held.lease.token))
                    .values(status="done", lease_holder=None, lease_expires_at=None)
                )
            await eventually(lambda: held.lost)  # the next renewal (every 0.1 s) finds no row

    assert not held.lost
    assert "lease passed to another replica" not in caplog.text
    assert holder_and_attempts(engine) == (None, 1)
