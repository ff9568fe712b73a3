"""Leases on rows and by name, on SQLite and PostgreSQL, each claimer with its own engine (as
replicas have): claims never overlap, an expired lease is taken over, a stale holder can renew
nothing, and a named lease has one holder at a time."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from appliance.batches.models import BatchItem, BatchJob
from appliance.batches.service import ITEMS
from appliance.db.engine import session_scope
from appliance.db.leases import LEASES, LeaseTerms, NamedLeases, RowLeases, kept, periodically
from appliance.db.models import utcnow


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
        assert {holders[seq] for seq in seqs} == {f"replica-{i}"}


def test_an_expired_lease_is_taken_over_and_the_old_holder_renews_nothing(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job_id = job_with_items(engine, 2)
    first, second = item_leases(engine, "first"), item_leases(other_engine(), "second")
    [row] = claim(first, job_id, seq=0)
    key = first.key_of(row)
    assert row.attempts == 1 and row.lease_holder == "first"
    assert claim(second, job_id, seq=0) == []  # held: not claimable
    assert first.renew({key}) == {key}

    expire_items(engine)  # the first holder died: it renewed nothing since
    [again] = claim(second, job_id, seq=0)

    assert (again.seq, again.lease_holder, again.attempts) == (0, "second", 2)
    assert first.renew({key}) == set()  # the stale holder holds nothing now
    assert second.renew({key}) == {key}
    first.release({key})  # and cannot give away what it no longer holds
    assert claim(first, job_id, seq=0) == []


def test_a_released_item_is_claimable_at_once(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    job_id = job_with_items(engine, 1)
    first, second = item_leases(engine, "first"), item_leases(other_engine(), "second")
    [row] = claim(first, job_id)

    first.release({first.key_of(row)}, values={"attempts": ITEMS.c.attempts - 1})

    [again] = claim(second, job_id)
    assert (again.lease_holder, again.attempts) == ("second", 1)


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
