"""Failed authentications per address: refused past the limit, refusals counted once; in one
process's memory, or in the database where two engines (two replicas) share the count and one
of them takes the refusals for the window's audit row."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from appliance.audit.events import AuthThrottled as AuthThrottledEvent
from appliance.audit.store import AuditLog
from appliance.auth import ratelimit
from appliance.auth.identity import Caller, Identity
from appliance.auth.ratelimit import (
    FailureThrottle,
    LocalFailureThrottle,
    RateWindows,
    SharedFailureThrottle,
    report_when_over,
)
from appliance.config import Settings
from appliance.db.engine import make_engine, upgrade
from appliance.db.models import AuditEvent
from appliance.errors import AuthError, AuthThrottled, RateLimitsUnavailable
from tests.support.postgres import PostgresServer
from tests.support.windows import room_in_window

# The start of a minute an hour ahead: pruning (which reads the database's clock) leaves it be.
T = (time.time() // 60 + 60) * 60
START = int(T * 1000)


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    other = make_engine(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


def _shared(engine: Engine, other_engine: Engine) -> tuple[FailureThrottle, FailureThrottle]:
    return (
        SharedFailureThrottle(RateWindows(engine), "auth"),
        SharedFailureThrottle(RateWindows(other_engine), "auth"),
    )


def test_an_address_is_refused_past_its_limit_until_the_window_ends() -> None:
    throttle = LocalFailureThrottle(window_s=60)
    for _ in range(3):
        assert throttle.refuse("10.0.0.1", 3, now=T) is None
        throttle.failed("10.0.0.1", now=T)

    first = throttle.refuse("10.0.0.1", 3, now=T + 10)
    assert first is not None and (first.retry_after, first.first) == (50, True)
    again = throttle.refuse("10.0.0.1", 3, now=T + 11)
    assert again is not None and (again.retry_after, again.first) == (49, False)
    assert throttle.refuse("10.0.0.2", 3, now=T + 11) is None  # per address
    assert throttle.take("10.0.0.1", first.window, now=T + 30) is None  # not over yet
    assert throttle.take("10.0.0.1", first.window, now=T + 60) == 2
    assert throttle.take("10.0.0.1", first.window, now=T + 60) == 0  # counted once


def test_a_closed_windows_count_survives_a_new_window() -> None:
    throttle = LocalFailureThrottle(window_s=60)
    throttle.failed("a", now=T)
    refusal = throttle.refuse("a", 1, now=T + 1)
    throttle.refuse("a", 1, now=T + 2)

    assert throttle.refuse("a", 1, now=T + 61) is None  # a new window began
    assert refusal is not None
    assert throttle.take("a", refusal.window, now=T + 61) == 2


def test_two_engines_share_the_failures_and_the_refusals(
    engine: Engine, other_engine: Engine
) -> None:
    first, second = _shared(engine, other_engine)
    for n in range(4):
        assert (first, second)[n % 2].refuse("10.0.0.7", 4, now=T + n) is None
        (first, second)[n % 2].failed("10.0.0.7", now=T + n)

    refusals = [(first, second)[n % 2].refuse("10.0.0.7", 4, now=T + 10) for n in range(5)]
    assert all(r is not None and r.window == START and r.retry_after == 50 for r in refusals)
    # Each replica reports the windows it refused in: its first refusal says so.
    assert [r.first for r in refusals if r is not None] == [True, True, False, False, False]
    assert first.refuse("10.0.0.8", 4, now=T + 10) is None  # another address


def test_the_refusals_go_to_one_replica_once_the_window_is_over(
    engine: Engine, other_engine: Engine
) -> None:
    first, second = _shared(engine, other_engine)
    first.failed("10.0.0.9", now=T)
    for n in range(3):
        (first, second)[n % 2].refuse("10.0.0.9", 1, now=T + 5)

    assert first.take("10.0.0.9", START, now=T + 59) is None  # still open
    assert second.take("10.0.0.9", START, now=T + 60) == 3
    assert first.take("10.0.0.9", START, now=T + 60) == 0  # taken
    assert first.take("10.0.0.9", START, final=True, now=T + 61) == 0


def test_a_stopping_replica_takes_an_open_windows_refusals(
    engine: Engine, other_engine: Engine
) -> None:
    first, second = _shared(engine, other_engine)
    first.failed("10.0.0.10", now=T)
    second.refuse("10.0.0.10", 1, now=T + 1)
    assert second.take("10.0.0.10", START, final=True, now=T + 2) == 1
    assert first.take("10.0.0.10", START, now=T + 60) == 0


@pytest.fixture
def pg_engines(pg_server: PostgresServer) -> Iterator[tuple[Engine, Engine]]:
    url = pg_server.create_database()
    upgrade(url)
    engines = make_engine(url), make_engine(url)
    yield engines
    for each in engines:
        each.dispose()


@pytest.mark.postgresql
async def test_the_aggregate_row_is_written_once_across_two_replicas(
    pg_engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, auth_failures_per_minute=2)
    replicas = [Identity(settings, each, AuditLog(each)) for each in pg_engines]
    for identity in replicas:
        identity.auth_throttle.window_s = 4.0  # so that the window ends within the test
    caller = Caller(source="10.0.0.11")
    left = 4.0 - time.time() % 4.0
    if left < 3.0:  # too little of this window left for the whole exchange: the next one
        await asyncio.sleep(left + 0.05)

    statuses: list[str] = []
    for n in range(8):
        try:
            await replicas[n % 2].key_principal(f"apl_bad{n}_secret", caller=caller)
        except AuthThrottled:
            statuses.append("throttled")
        except AuthError:
            statuses.append("denied")
    assert statuses == ["denied"] * 2 + ["throttled"] * 6

    # Both replicas refused in the window, so both try to report it.
    await asyncio.gather(*replicas[0]._pending, *replicas[1]._pending)
    with Session(pg_engines[0]) as session:
        rows = list(session.exec(select(AuditEvent).where(AuditEvent.action == "auth.throttled")))
    assert [(row.source, row.details["count"]) for row in rows] == [("10.0.0.11", 6)]


def test_refusals_after_a_stopping_replicas_take_are_reported_when_the_window_ends(
    engine: Engine, other_engine: Engine
) -> None:
    first, second = _shared(engine, other_engine)
    first.failed("10.0.0.12", now=T)
    for _ in range(3):
        first.refuse("10.0.0.12", 1, now=T + 1)
    assert first.take("10.0.0.12", START, final=True, now=T + 2) == 3  # the first replica stops

    for _ in range(2):
        second.refuse("10.0.0.12", 1, now=T + 3)  # the window goes on on the other one
    assert second.take("10.0.0.12", START, now=T + 59) is None
    assert second.take("10.0.0.12", START, now=T + 60) == 2  # the rest, not lost
    assert first.take("10.0.0.12", START, now=T + 60) == 0
    assert second.take("10.0.0.12", START, final=True, now=T + 61) == 0


def test_concurrent_claims_take_each_refusal_once(engine: Engine, other_engine: Engine) -> None:
    throttles = _shared(engine, other_engine)
    throttles[0].failed("10.0.0.13", now=T)
    refusals_per_thread, threads = 15, 4
    start = threading.Barrier(2 * threads)
    taken: list[int] = []

    def refuse(throttle: FailureThrottle) -> None:
        start.wait()
        for _ in range(refusals_per_thread):
            throttle.refuse("10.0.0.13", 1, now=T + 1)

    def claim(throttle: FailureThrottle) -> None:
        start.wait()
        for _ in range(refusals_per_thread):
            taken.append(throttle.take("10.0.0.13", START, final=True, now=T + 1) or 0)

    workers = [
        threading.Thread(target=work, args=(throttles[n % 2],))
        for n in range(threads)
        for work in (refuse, claim)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # What the racing claims left is taken once the window is over.
    taken += [throttle.take("10.0.0.13", START, now=T + 60) or 0 for throttle in throttles]
    assert sum(taken) == refusals_per_thread * threads
    assert len([n for n in taken if n]) > 1  # claimed in several rows, none counted twice


@pytest.mark.postgresql
async def test_a_stopping_replica_and_the_window_end_write_one_row_each(
    pg_engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, auth_failures_per_minute=1)
    stopping, staying = (Identity(settings, each, AuditLog(each)) for each in pg_engines)
    for identity in (stopping, staying):
        identity.auth_throttle.window_s = 4.0
    caller = Caller(source="10.0.0.14")
    left = 4.0 - time.time() % 4.0
    if left < 3.0:
        await asyncio.sleep(left + 0.05)

    async def attempts(identity: Identity, count: int) -> None:
        for n in range(count):
            with pytest.raises((AuthError, AuthThrottled)):  # denied, then throttled
                await identity.key_principal(f"apl_bad{n}_secret", caller=caller)

    await attempts(stopping, 4)  # one failure, three refusals
    await asyncio.sleep(0)  # its report is under way
    for task in stopping._pending:  # the app stops: its report is written now
        task.cancel()
    await asyncio.gather(*stopping._pending, return_exceptions=True)
    await attempts(staying, 2)  # two more refusals in the same window
    await asyncio.gather(*staying._pending)

    with Session(pg_engines[0]) as session:
        rows = list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.action == "auth.throttled")
                .order_by(AuditEvent.seq)  # type: ignore[arg-type]
            )
        )
    assert [row.details["count"] for row in rows] == [3, 2]


class FlakyWindows(RateWindows):
    """Real windows whose first claims fail as they do when the database is out of reach (a
    fake failure: a database cannot be made to drop exactly two statements)."""

    def __init__(self, engine: Engine, *, failures: int) -> None:
        super().__init__(engine)
        self.failures = failures
        self.claims = 0

    def claim(
        self, bucket: str, start: int, *, final: bool = False, now: float | None = None
    ) -> int | None:
        self.claims += 1
        if self.claims <= self.failures:
            raise RateLimitsUnavailable("the shared rate-limit counters cannot be reached")
        return super().claim(bucket, start, final=final, now=now)


async def test_a_claim_the_database_did_not_answer_is_made_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "_CLAIM_RETRY_S", 0.05)
    windows = FlakyWindows(engine, failures=2)
    throttle = SharedFailureThrottle(windows, "auth", window_s=2.0)
    room_in_window(1.5, window_s=2.0)
    await throttle.failed_async("10.0.0.15")
    refusals = [await throttle.refuse_async("10.0.0.15", 1) for _ in range(3)]
    first = refusals[0]
    assert first is not None and first.first

    pending: set[asyncio.Task[None]] = set()
    audit = AuditLog(engine)
    report_when_over(
        throttle,
        "10.0.0.15",
        first,
        pending,
        audit=audit,
        event=AuthThrottledEvent,
        status_code=429,
    )
    await asyncio.gather(*pending)

    with Session(engine) as session:
        rows = list(session.exec(select(AuditEvent).where(AuditEvent.action == "auth.throttled")))
    assert [(row.source, row.details["count"]) for row in rows] == [("10.0.0.15", 3)]
    assert windows.claims == 3  # two unanswered, then the one that took the count
