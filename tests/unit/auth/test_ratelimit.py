"""Fixed windows aligned to the clock: per bucket, Retry-After until the window resets; in one
process's memory, or in the database where two engines (two replicas) share every window."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, event, func, make_url, select, text

from appliance.auth.ratelimit import (
    LocalRateLimiter,
    RateLimiter,
    RateWindows,
    SharedRateLimiter,
    _connect_args,
    rate_limiter,
    shared_windows,
)
from appliance.db.engine import make_engine
from appliance.errors import RateLimitsUnavailable
from tests.support.process import free_port
from tests.support.windows import SilentServer

# The start of a minute an hour ahead: pruning (which reads the database's clock) leaves it be.
T = (time.time() // 60 + 60) * 60


@pytest.fixture
def other_engine(engine: Engine) -> Iterator[Engine]:
    """A second engine on the same database: another replica."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


@pytest.fixture
def pair(engine: Engine, other_engine: Engine) -> tuple[RateLimiter, RateLimiter]:
    return SharedRateLimiter(RateWindows(engine)), SharedRateLimiter(RateWindows(other_engine))


def test_limit_per_bucket_and_reset_in_memory() -> None:
    limiter = LocalRateLimiter(window_s=60)
    assert [limiter.hit(["a"], 3, now=T + 10) for _ in range(3)] == [None, None, None]
    assert limiter.hit(["a"], 3, now=T + 10.5) == 50  # until the minute ends, rounded up
    assert limiter.hit(["b"], 3, now=T + 11) is None
    assert limiter.hit(["a"], 3, now=T + 60) is None  # a new minute


def test_one_full_bucket_refuses_the_hit() -> None:
    limiter = LocalRateLimiter(window_s=60)
    assert limiter.hit(["key", "addr"], 1, now=T) is None
    assert limiter.hit(["other-key", "addr"], 1, now=T + 1) == 59


def test_two_engines_share_every_window_exactly(pair: tuple[RateLimiter, RateLimiter]) -> None:
    first, second = pair
    answers = [
        (first, second)[n % 2].hit(["key:1", "addr:10.0.0.1"], 5, now=T + 1) for n in range(9)
    ]
    assert answers == [None] * 5 + [59] * 4
    assert second.hit(["key:2", "addr:10.0.0.1"], 5, now=T + 2) == 58  # the address is full
    assert first.hit(["key:2"], 5, now=T + 2) is None  # another key is not


def test_a_window_resets_on_the_next_one(pair: tuple[RateLimiter, RateLimiter]) -> None:
    first, second = pair
    assert first.hit(["b"], 1, now=T + 30) is None
    assert second.hit(["b"], 1, now=T + 59.2) == 1  # at least a second
    assert second.hit(["b"], 1, now=T + 60) is None
    assert first.hit(["b"], 1, now=T + 61) == 59


def test_the_limit_holds_under_concurrent_hits_from_both(
    pair: tuple[RateLimiter, RateLimiter],
) -> None:
    limit = 25
    accepted: list[int] = []
    start = threading.Barrier(4)

    def hammer(limiter: RateLimiter) -> None:
        start.wait()
        for _ in range(20):
            if limiter.hit(["shared"], limit, now=T + 5) is None:
                accepted.append(1)

    threads = [threading.Thread(target=hammer, args=(pair[n % 2],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(accepted) == limit


def test_finished_windows_are_pruned_and_current_ones_kept(engine: Engine) -> None:
    windows = RateWindows(engine)
    windows.hit(["old"], 5, window_s=60, now=T)
    windows.hit(["new"], 5, window_s=60, now=T + 660)
    assert windows.prune(now=T + 661) == 1
    assert windows.prune(now=T + 661) == 0  # idempotent: any replica, any time
    with engine.connect() as connection:
        kept = connection.execute(select(func.count()).select_from(text("rate_windows")))
        assert kept.scalar_one() == 1
    assert windows.hit(["new"], 1, window_s=60, now=T + 661) == 59


def test_many_finished_windows_are_pruned_in_batches(engine: Engine) -> None:
    windows = RateWindows(engine)
    windows.hit([f"flood:{n}" for n in range(250)], 5, window_s=60, now=T)  # a flood's rows
    windows.hit(["new"], 5, window_s=60, now=T + 660)
    deletes: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("DELETE FROM rate_windows"):
            deletes.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)  # the windows' own engine included
    try:
        assert windows.prune(now=T + 661, batch=100) == 250
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert len(deletes) == 3  # 100, 100, then 50: fewer than a batch, so none is left
    with engine.connect() as connection:
        kept = connection.execute(select(func.count()).select_from(text("rate_windows")))
        assert kept.scalar_one() == 1


def test_the_statement_timeout_joins_the_urls_own_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGOPTIONS", raising=False)
    url = make_url("postgresql+psycopg://appliance@db/app?options=-csearch_path%3Dtenant")
    args = _connect_args(url, 3.0)
    assert args["options"] == "-csearch_path=tenant -c statement_timeout=3000"
    assert (args["connect_timeout"], args["tcp_user_timeout"]) == (3, 3000)
    plain = make_url("postgresql+psycopg://appliance@db/app")
    assert _connect_args(plain, 1.5)["options"] == "-c statement_timeout=1500"
    # Without options in the URL, the environment's are what the connection would have read.
    monkeypatch.setenv("PGOPTIONS", "-c search_path=tenant")
    assert _connect_args(plain, 1.0)["options"] == "-c search_path=tenant -c statement_timeout=1000"


def test_a_bucket_is_keyed_by_a_bounded_digest(engine: Engine) -> None:
    windows = RateWindows(engine)
    assert windows.hit(["login:user:" + "x" * 10_000], 1, window_s=60, now=T) is None
    with engine.connect() as connection:
        (bucket,) = connection.execute(text("SELECT bucket FROM rate_windows")).one()
    assert bucket == RateWindows.key("login:user:" + "x" * 10_000)
    assert len(bucket) == 32


def test_postgresql_shares_and_sqlite_keeps_its_own(engine: Engine) -> None:
    windows = shared_windows(engine)
    if engine.dialect.name == "postgresql":
        assert isinstance(rate_limiter(windows), SharedRateLimiter)
    else:
        assert windows is None  # one process serves SQLite
        assert isinstance(rate_limiter(windows), LocalRateLimiter)


def test_an_unreachable_database_refuses_rather_than_lets_through() -> None:
    # Nothing listens on this port: the hit cannot be counted, so it is not allowed.
    engine = create_engine(f"postgresql+psycopg://appliance@127.0.0.1:{free_port()}/gone")
    limiter = SharedRateLimiter(RateWindows(engine))
    with pytest.raises(RateLimitsUnavailable) as refused:
        limiter.hit(["key:1"], 100)
    assert refused.value.status_code == 503
    assert refused.value.code == "rate_limits_unavailable"
    engine.dispose()


async def test_a_silent_database_refuses_the_hit_and_leaves_the_event_loop_free() -> None:
    with SilentServer() as silent:
        # A host that takes the connection and never answers: the hit waits for its timeout.
        engine = create_engine(f"postgresql+psycopg://appliance@127.0.0.1:{silent.port}/gone")
        limiter = SharedRateLimiter(RateWindows(engine, timeout_s=1.0))
        hit = asyncio.create_task(limiter.hit_async(["key:1"], 100))
        # The loop runs on while the hit connects (this wait is answered through it)...
        assert await asyncio.to_thread(silent.connected.wait, 60)
        await asyncio.sleep(0.05)
        assert not hit.done()  # ...and while the hit waits for an answer
        with pytest.raises(RateLimitsUnavailable) as refused:
            await asyncio.wait_for(hit, 60)  # the bound is the windows' own, not this one
    assert refused.value.code == "rate_limits_unavailable"
    engine.dispose()


async def test_in_memory_limits_answer_the_async_callers_alike() -> None:
    limiter = LocalRateLimiter(window_s=60)
    assert [await limiter.hit_async(["a"], 2) for _ in range(3)][:2] == [None, None]
    assert await limiter.hit_async(["a"], 2) is not None
