"""Fixed-window rate limits and failure throttles: in the database when several processes serve
it, in memory when one does.

Windows are fixed and aligned to the clock (a 60-second window is a calendar minute), so every
process agrees on the window a hit falls in without asking the others.

- **PostgreSQL** (several `appliance serve` replicas may share it): the windows are rows of
  `rate_windows` (`RateWindows`), counted on the database's clock. A hit is one
  `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` for all of its buckets, so a limit holds
  across every replica as it would in one process; the table is UNLOGGED (migration 0014), so a
  hit does not wait for the disk (tests/bench/RATELIMITS.md). Async callers use the `*_async`
  methods, which run the statement on a worker thread: a slow database holds up the requests
  that wait for it, never the event loop. The windows have an engine of their own with short
  connect, pool and statement timeouts, so when the database cannot be reached the request is
  refused within seconds (503 `rate_limits_unavailable`), never served without a limit.
- **SQLite**: one process serves (`appliance serve` holds a lock beside the database file and a
  second server refuses to start), so its memory holds the windows (`LocalRateLimiter`,
  `LocalFailureThrottle`) and no request pays a write on a database whose writers take turns,
  nor a thread hop (their `*_async` methods run inline).

A throttle counts the refusals of each address and window for one aggregate audit row
(`report_when_over`): every process that refused the address in a window asks for the count when
the window ends, and one of them gets it (one `UPDATE` raises the window's `reported_refusals`
to its `refusals` and returns the difference), so each refusal is in one row however many
replicas did the refusing. A replica that stops before the window ends takes the count so far;
refusals counted after that are reported by the next claim, in a second row. A claim the
database does not answer is tried again, less and less often, for as long as the window's row
is kept (`prune` drops it ten minutes after the window ends): the count waits in the row.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
from sqlalchemy import URL, Connection, Engine, TextClause, create_engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from appliance.audit.events import Event
from appliance.audit.store import AuditLog
from appliance.errors import ApplianceError, RateLimitsUnavailable

log = logging.getLogger("appliance.auth")

_MAX_ENTRIES = 50_000
"""Buckets a process keeps in memory before it drops finished windows."""

TIMEOUT_S = 3.0
"""How long a request waits for the shared windows (a connection, a free one in the pool, a
statement) before it is refused with 503: seconds, not the minutes of a TCP timeout."""

_POOL_SIZE = 8
"""Connections (and worker threads) of the windows' own pool: one statement takes well under a
millisecond, so a few serve a replica's requests, and a stalled database holds no more."""

T = TypeVar("T")


def _now_ms(now: float | None) -> int:
    return int((time.time() if now is None else now) * 1000)


def _span_ms(window_s: float) -> int:
    return max(1, round(window_s * 1000))


def _retry_after(ends_in_ms: float) -> int:
    return max(1, math.ceil(ends_in_ms / 1000))


@dataclass(frozen=True)
class Refusal:
    """An address past its throttle: which window refused it, and for how long."""

    window: int
    """The window's start (milliseconds since the epoch): what `take` is asked about."""
    ends_in: float
    """Seconds until the window ends."""
    first: bool
    """The first refusal this process counted in the window: this one schedules its report."""

    @property
    def retry_after(self) -> int:
        """Whole seconds for `Retry-After`, at least 1."""
        return _retry_after(self.ends_in * 1000)


class RateLimiter(Protocol):
    """Hits per bucket in fixed windows of `window_s`."""

    window_s: float

    def hit(self, buckets: list[str], limit: int, *, now: float | None = None) -> int | None:
        """Count one hit in every bucket; None if none is past `limit`, else the seconds until
        the window resets. `now` (seconds since the epoch) is for tests."""
        ...

    async def hit_async(self, buckets: list[str], limit: int) -> int | None:
        """`hit` for async code: off the event loop when it waits for a database."""
        ...


class FailureThrottle(Protocol):
    """Failed authentications per address in fixed windows of `window_s`: past `limit`
    failures an address is refused (without checking what it presents) until its window ends,
    and the refusals are counted for one audit row per address and window."""

    window_s: float

    def refuse(self, address: str, limit: int, *, now: float | None = None) -> Refusal | None:
        """A `Refusal` (counted) when `address` is past `limit` failures; None when it may try."""
        ...

    def failed(self, address: str, *, now: float | None = None) -> None:
        """Count one failed authentication from `address`."""
        ...

    def take(
        self, address: str, window: int, *, final: bool = False, now: float | None = None
    ) -> int | None:
        """The refusals of `address` in `window`, to one caller only (0 to the others); None
        while the window is still open, unless `final` (the app is stopping: take it now)."""
        ...

    async def refuse_async(self, address: str, limit: int) -> Refusal | None:
        """`refuse` for async code: off the event loop when it waits for a database."""
        ...

    async def failed_async(self, address: str) -> None:
        """`failed` for async code: off the event loop when it waits for a database."""
        ...

    async def take_async(self, address: str, window: int, *, final: bool = False) -> int | None:
        """`take` for async code: off the event loop when it waits for a database."""
        ...


# -- one process -------------------------------------------------------------------------------


class LocalRateLimiter:
    """`RateLimiter` in this process's memory (SQLite: one process serves)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # bucket -> (window start, hits)

    def hit(self, buckets: list[str], limit: int, *, now: float | None = None) -> int | None:
        """See `RateLimiter.hit`."""
        now_ms, span = _now_ms(now), _span_ms(self.window_s)
        start = now_ms - now_ms % span
        full = False
        with self._lock:
            for bucket in dict.fromkeys(buckets):
                began, hits = self._counts.get(bucket, (start, 0))
                hits = hits + 1 if began == start else 1
                self._counts[bucket] = (start, hits)
                full = full or hits > limit
            if len(self._counts) > _MAX_ENTRIES:
                # Bounded memory under a flood of distinct addresses: drop finished windows.
                for key in [k for k, (s, _) in self._counts.items() if s != start]:
                    del self._counts[key]
        return _retry_after(start + span - now_ms) if full else None

    async def hit_async(self, buckets: list[str], limit: int) -> int | None:
        """See `RateLimiter.hit_async`: inline, as a dict costs less than a thread hop."""
        return self.hit(buckets, limit)


class LocalFailureThrottle:
    """`FailureThrottle` in this process's memory (SQLite: one process serves)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        # address -> [window start, failures, refusals past the throttle]
        self._windows: dict[str, list[int]] = {}
        # Refusals of windows that ended before their count was taken: (address, start) -> n.
        self._closed: dict[tuple[str, int], int] = {}

    def _window(self, address: str, now_ms: int) -> list[int]:
        span = _span_ms(self.window_s)
        start = now_ms - now_ms % span
        window = self._windows.get(address)
        if window is None or window[0] != start:
            if window is not None and window[2]:
                self._closed[(address, window[0])] = window[2]
            window = [start, 0, 0]
            self._windows[address] = window
            if len(self._windows) > _MAX_ENTRIES:
                for key in [k for k, w in self._windows.items() if w[0] != start and not w[2]]:
                    del self._windows[key]
        return window

    def refuse(self, address: str, limit: int, *, now: float | None = None) -> Refusal | None:
        """See `FailureThrottle.refuse`."""
        now_ms = _now_ms(now)
        with self._lock:
            window = self._window(address, now_ms)
            if window[1] < limit:
                return None
            window[2] += 1
            ends_in = (window[0] + _span_ms(self.window_s) - now_ms) / 1000
            return Refusal(window=window[0], ends_in=ends_in, first=window[2] == 1)

    def failed(self, address: str, *, now: float | None = None) -> None:
        """See `FailureThrottle.failed`."""
        with self._lock:
            self._window(address, _now_ms(now))[1] += 1

    def take(
        self, address: str, window: int, *, final: bool = False, now: float | None = None
    ) -> int | None:
        """See `FailureThrottle.take`."""
        with self._lock:
            if not final and _now_ms(now) < window + _span_ms(self.window_s):
                return None
            closed = self._closed.pop((address, window), None)
            if closed is not None:
                return closed
            current = self._windows.get(address)
            if current is None or current[0] != window:
                return 0
            count, current[2] = current[2], 0
            return count

    # Inline, as a dict costs less than a thread hop.
    async def refuse_async(self, address: str, limit: int) -> Refusal | None:
        """See `FailureThrottle.refuse_async`."""
        return self.refuse(address, limit)

    async def failed_async(self, address: str) -> None:
        """See `FailureThrottle.failed_async`."""
        self.failed(address)

    async def take_async(self, address: str, window: int, *, final: bool = False) -> int | None:
        """See `FailureThrottle.take_async`."""
        return self.take(address, window, final=final)


# -- several processes on one database ---------------------------------------------------------

_CLOCK_MS = {
    "postgresql": "CAST(FLOOR(EXTRACT(EPOCH FROM now()) * 1000) AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}
"""The database's clock in milliseconds, one value per statement: every replica counts on it."""

_KEEP_MS = 600_000
"""How long a finished window stays before `prune` drops it: its report comes seconds after it
ends, so ten minutes leaves room for a slow one."""

_PRUNE_EVERY_S = 60.0

_PRUNE_BATCH = 1000
"""Rows one prune statement deletes: each statement stays well inside the windows' statement
timeout however many windows a flood of addresses left behind."""


class RateWindows:
    """The `rate_windows` table: windows every process on the database counts in together.

    A bucket's name holds addresses and user names; the table keys it by a digest, bounded in
    length whatever a caller sends. Each call is one statement (on PostgreSQL without a
    transaction around it, on a pool of its own: see `TIMEOUT_S`). The methods block; async
    code calls them through `off_loop`.
    """

    def __init__(self, engine: Engine, *, timeout_s: float = TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._own: Engine | None = None
        self._connect: Callable[[], AbstractContextManager[Connection]] = engine.begin
        if engine.dialect.name == "postgresql":
            self._own = _windows_engine(engine, timeout_s)
            self._connect = self._own.connect
        clock = _CLOCK_MS[engine.dialect.name]
        self._clock = f"COALESCE(CAST(:now AS BIGINT), {clock})"
        self._start = f"({self._clock} - {self._clock} % :span)"
        self._statements: dict[int, TextClause] = {}
        # Constant texts, so that psycopg prepares each after a few uses on a connection.
        self._refuse = text(
            f"UPDATE rate_windows SET refusals = refusals + 1 "  # noqa: S608 - constants only
            f"WHERE bucket = :bucket AND window_start = {self._start} AND hits >= :limit "
            f"RETURNING refusals, window_start, window_end - {self._clock}"
        )
        # SET reads the row as it was: `claimed` gets what this claim raises the reported count
        # by, in the one statement that raises it, so two claimers never take the same refusal.
        self._claim = text(
            "UPDATE rate_windows SET reported_refusals = refusals, "  # noqa: S608 - constants only
            "claimed_refusals = refusals - reported_refusals "
            "WHERE bucket = :bucket AND window_start = :start AND refusals > reported_refusals "
            f"AND (window_end <= {self._clock} OR :final) RETURNING claimed_refusals"
        )
        self._open = text(
            "SELECT 1 FROM rate_windows "  # noqa: S608 - constants only
            f"WHERE bucket = :bucket AND window_start = :start AND window_end > {self._clock}"
        )
        # By primary key, a batch at a time (the index on window_end finds them).
        self._prune = text(
            "DELETE FROM rate_windows WHERE (bucket, window_start) IN ("  # noqa: S608
            "SELECT bucket, window_start FROM rate_windows "
            f"WHERE window_end < {self._clock} - :keep LIMIT :batch)"
        )
        self._prune_lock = threading.Lock()
        self._next_prune = 0.0
        self._turns: anyio.Semaphore | None = None
        self._threads: anyio.CapacityLimiter | None = None

    @staticmethod
    def key(bucket: str) -> str:
        """The table's key for a bucket name."""
        return hashlib.blake2b(bucket.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    async def off_loop(self, call: Callable[[], T]) -> T:
        """Run `call` (a method of this object) on a worker thread of the windows' own few:
        a stalled database holds up the requests that wait for it, not the event loop nor the
        threads the rest of the app runs its work on."""
        if self._turns is None or self._threads is None:  # made in a running loop
            self._turns = anyio.Semaphore(_POOL_SIZE)
            self._threads = anyio.CapacityLimiter(_POOL_SIZE)
        turns, threads = self._turns, self._threads
        try:
            # Waiting for a thread is bounded like waiting for a connection; a turn taken, the
            # thread is free at once (as many threads as turns).
            with anyio.fail_after(self.timeout_s):
                await turns.acquire()
        except TimeoutError:
            log.error("rate-limit windows unreachable", extra={"detail": "TimeoutError"})
            raise _unavailable() from None
        try:
            return await anyio.to_thread.run_sync(call, limiter=threads)
        finally:
            turns.release()

    def close(self) -> None:
        """Close the windows' own connections (the pool opens new ones if used again)."""
        if self._own is not None:
            self._own.dispose()

    def _hit_statement(self, count: int) -> TextClause:
        statement = self._statements.get(count)
        if statement is None:
            rows = ", ".join(
                f"(:b{i}, {self._start}, {self._start} + :span, 1, 0, 0, 0)" for i in range(count)
            )
            statement = text(
                "INSERT INTO rate_windows AS w "  # noqa: S608 - constants only
                "(bucket, window_start, window_end, hits, refusals, reported_refusals, "
                f"claimed_refusals) VALUES {rows} "
                "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = w.hits + 1 "
                f"RETURNING hits, window_end - {self._clock}"
            )
            self._statements[count] = statement
        return statement

    def _run(self, statement: TextClause, params: dict[str, Any]) -> list[Any]:
        for attempt in (1, 2):
            try:
                with self._connect() as connection:
                    rows = list(connection.execute(statement, params))
                break
            except DBAPIError as exc:
                # A pooled connection the database dropped (it restarted): once more on a new
                # one, rather than a ping before every statement. At worst a hit counts twice.
                if exc.connection_invalidated and attempt == 1:
                    continue
                raise self._unreachable(exc) from exc
            except SQLAlchemyError as exc:
                raise self._unreachable(exc) from exc
        self._prune_now_and_then()
        return rows

    @staticmethod
    def _unreachable(exc: Exception) -> RateLimitsUnavailable:
        # The error's type only: its message may quote a bucket (an address, a user name).
        log.error("rate-limit windows unreachable", extra={"detail": type(exc).__name__})
        return _unavailable()

    def hit(
        self, buckets: list[str], limit: int, *, window_s: float, now: float | None = None
    ) -> int | None:
        """Count one hit in every bucket, in one statement; None if none is past `limit`, else
        the seconds until the window resets."""
        # Sorted, so two statements that lock the same rows lock them in the same order.
        keys = sorted({self.key(bucket) for bucket in buckets})
        if not keys:
            return None
        params: dict[str, Any] = {f"b{i}": key for i, key in enumerate(keys)}
        params |= {"span": _span_ms(window_s), "now": _db_now(now)}
        rows = self._run(self._hit_statement(len(keys)), params)
        waits = [ends_in for hits, ends_in in rows if hits > limit]
        return _retry_after(max(waits)) if waits else None

    def refuse(
        self, bucket: str, limit: int, *, window_s: float, now: float | None = None
    ) -> tuple[int, int, int] | None:
        """Count a refusal in the bucket's window if it holds `limit` hits or more:
        (refusals so far, window start, milliseconds until it ends); else None, writing nothing."""
        params = {"bucket": self.key(bucket), "limit": limit, "span": _span_ms(window_s)}
        rows = self._run(self._refuse, params | {"now": _db_now(now)})
        if not rows:
            return None
        refusals, start, ends_in = rows[0]
        return int(refusals), int(start), int(ends_in)

    def claim(
        self, bucket: str, start: int, *, final: bool = False, now: float | None = None
    ) -> int | None:
        """The refusals of the bucket's window that began at `start` not yet claimed, to the
        first caller after it ended (or now, with `final`); 0 when there are none; None while
        it is still open. A window claimed early (`final`) is claimed again when it ends: the
        refusals counted since go to that claim."""
        params = {"bucket": self.key(bucket), "start": start, "now": _db_now(now)}
        rows = self._run(self._claim, params | {"final": final})
        if rows:
            return int(rows[0][0])
        if not final and self._run(self._open, params):
            return None
        return 0

    def prune(self, *, now: float | None = None, batch: int = _PRUNE_BATCH) -> int:
        """Drop windows that ended more than ten minutes ago, `batch` rows a statement until
        none is left; any process may, any time. Returns how many it dropped."""
        params = {"keep": _KEEP_MS, "now": _db_now(now), "batch": batch}
        dropped = 0
        while True:
            # A connection a statement: the pool has one beyond the requests' turns for it.
            with self._connect() as connection:
                count = connection.execute(self._prune, params).rowcount
            dropped += count
            if count < batch:
                return dropped

    def _prune_now_and_then(self) -> None:
        """At most once a minute per process, off the request: a flood of distinct addresses
        leaves many rows, and their delete should not hold up the request that notices."""
        if time.monotonic() < self._next_prune or not self._prune_lock.acquire(blocking=False):
            return
        self._next_prune = time.monotonic() + _PRUNE_EVERY_S

        def prune() -> None:
            try:
                self.prune()
            except SQLAlchemyError as exc:
                log.warning("rate-limit windows not pruned", extra={"detail": type(exc).__name__})
            finally:
                self._prune_lock.release()

        threading.Thread(target=prune, name="rate-windows-prune", daemon=True).start()


def _windows_engine(engine: Engine, timeout_s: float) -> Engine:
    """A small pool of its own on `engine`'s database, for the windows: without a ping before
    each statement (`RateWindows._run` retries once instead), without a transaction around it,
    and bounded in time, so that an unreachable database refuses a request in seconds. The
    app's engine keeps its own settings for everything else."""
    return create_engine(
        engine.url,
        isolation_level="AUTOCOMMIT",
        # One connection beyond the requests' turns (`off_loop`): pruning never takes a
        # connection a request waits for.
        pool_size=_POOL_SIZE + 1,
        max_overflow=0,
        pool_timeout=timeout_s,
        connect_args=_connect_args(engine.url, timeout_s),
    )


def _connect_args(url: URL, timeout_s: float) -> dict[str, Any]:
    """The windows' connection timeouts, on top of what `url` asks for: the statement timeout
    is appended to the URL's own `options` (a `search_path`, say), or else to `PGOPTIONS`,
    which a connection given `options` would not read."""
    timeout_ms = max(1, round(timeout_s * 1000))
    given = url.query.get("options", os.environ.get("PGOPTIONS", ""))
    options = " ".join(given) if isinstance(given, tuple) else given
    return {
        "connect_timeout": max(1, math.ceil(timeout_s)),
        # Unacknowledged data (a statement sent to a host that went silent) gives up too.
        "tcp_user_timeout": timeout_ms,
        # And a statement stuck behind locks on a server that answers. Last, so it wins over
        # a statement_timeout of the URL's.
        "options": f"{options} -c statement_timeout={timeout_ms}".strip(),
    }


def _unavailable() -> RateLimitsUnavailable:
    return RateLimitsUnavailable(
        "the shared rate-limit counters (the database) cannot be reached; the request "
        "is refused rather than served without a limit"
    )


def _db_now(now: float | None) -> int | None:
    return None if now is None else _now_ms(now)


class SharedRateLimiter:
    """`RateLimiter` on `RateWindows`: one limit across every process on the database."""

    def __init__(self, windows: RateWindows, window_s: float = 60.0) -> None:
        self.windows = windows
        self.window_s = window_s

    def hit(self, buckets: list[str], limit: int, *, now: float | None = None) -> int | None:
        """See `RateLimiter.hit`."""
        return self.windows.hit(buckets, limit, window_s=self.window_s, now=now)

    async def hit_async(self, buckets: list[str], limit: int) -> int | None:
        """See `RateLimiter.hit_async`."""
        return await self.windows.off_loop(lambda: self.hit(buckets, limit))


class SharedFailureThrottle:
    """`FailureThrottle` on `RateWindows`, its buckets named `<namespace>:<address>`."""

    def __init__(self, windows: RateWindows, namespace: str, window_s: float = 60.0) -> None:
        self.windows = windows
        self.namespace = namespace
        self.window_s = window_s
        self._lock = threading.Lock()
        # Windows this process refused in and has not reported yet: (address, start).
        self._refused: set[tuple[str, int]] = set()

    def _bucket(self, address: str) -> str:
        return f"{self.namespace}:{address}"

    def refuse(self, address: str, limit: int, *, now: float | None = None) -> Refusal | None:
        """See `FailureThrottle.refuse`: writes nothing while `address` is under its limit."""
        counted = self.windows.refuse(self._bucket(address), limit, window_s=self.window_s, now=now)
        if counted is None:
            return None
        _, start, ends_in = counted
        with self._lock:
            first = (address, start) not in self._refused
            self._refused.add((address, start))
        return Refusal(window=start, ends_in=ends_in / 1000, first=first)

    def failed(self, address: str, *, now: float | None = None) -> None:
        """See `FailureThrottle.failed`."""
        # Counted only: the limit is `refuse`'s to apply.
        self.windows.hit([self._bucket(address)], 0, window_s=self.window_s, now=now)

    def take(
        self, address: str, window: int, *, final: bool = False, now: float | None = None
    ) -> int | None:
        """See `FailureThrottle.take`: what the window's refusals hold beyond those already
        reported goes to one caller."""
        count = self.windows.claim(self._bucket(address), window, final=final, now=now)
        if count is not None:  # taken: this process is done with the window
            with self._lock:
                self._refused.discard((address, window))
        # On an error the window stays this process's to report: its caller claims it again.
        return count

    async def refuse_async(self, address: str, limit: int) -> Refusal | None:
        """See `FailureThrottle.refuse_async`."""
        return await self.windows.off_loop(lambda: self.refuse(address, limit))

    async def failed_async(self, address: str) -> None:
        """See `FailureThrottle.failed_async`."""
        await self.windows.off_loop(lambda: self.failed(address))

    async def take_async(self, address: str, window: int, *, final: bool = False) -> int | None:
        """See `FailureThrottle.take_async`."""
        return await self.windows.off_loop(lambda: self.take(address, window, final=final))


def shared_windows(engine: Engine) -> RateWindows | None:
    """The database's windows where several processes may serve it (PostgreSQL); None on
    SQLite, where one process serves and keeps its windows in memory."""
    return RateWindows(engine) if engine.dialect.name == "postgresql" else None


def rate_limiter(windows: RateWindows | None, *, window_s: float = 60.0) -> RateLimiter:
    """A limiter on the shared windows, or in memory without them."""
    if windows is None:
        return LocalRateLimiter(window_s)
    return SharedRateLimiter(windows, window_s)


def failure_throttle(
    windows: RateWindows | None, namespace: str, *, window_s: float = 60.0
) -> FailureThrottle:
    """A throttle on the shared windows (its buckets under `namespace`), or in memory."""
    if windows is None:
        return LocalFailureThrottle(window_s)
    return SharedFailureThrottle(windows, namespace, window_s)


_CLAIM_RETRY_S = 0.25
_CLAIM_TRIES = 40
"""A window is over by the database's clock, which may run a little behind this process's."""

_CLAIM_BACKOFF_MAX_S = 30.0
"""The longest wait between two claims the database did not answer."""

_CLAIM_MARGIN_S = 60.0
"""A report's last claim comes this long before `prune` may drop the window's row."""


def report_when_over(
    throttle: FailureThrottle,
    address: str,
    refusal: Refusal,
    pending: set[asyncio.Task[None]],
    *,
    audit: AuditLog,
    event: type[Event],
    **fields: Any,
) -> None:
    """Once the window of `refusal` is over (or the app stops first), append `event` for
    `address` with its refusals in `details.count`, if this process is the one that takes them.

    The task runs in a context of its own: the row it writes belongs to no request.
    """
    window_s = int(throttle.window_s)

    async def write(count: int) -> None:
        details = {"count": count, "window_s": window_s}
        record = event(actor="anonymous", source=address[:100], details=details, **fields)
        await audit.append(record.record())

    async def claim() -> int | None:
        """The window's count once it is over; None if no claim got it while the window's row
        is kept (the database out of reach all along, or its clock far behind)."""
        give_up = anyio.current_time() + refusal.ends_in + _KEEP_MS / 1000 - _CLAIM_MARGIN_S
        await anyio.sleep(refusal.ends_in)
        still_open, backoff = 0, _CLAIM_RETRY_S
        while anyio.current_time() < give_up:
            try:
                count = await throttle.take_async(address, refusal.window)
            except ApplianceError:
                # Out of reach for now (logged where it failed): the refusals stay in the row,
                # so claim again, less often the longer it lasts.
                await anyio.sleep(min(backoff, max(0.0, give_up - anyio.current_time())))
                backoff = min(backoff * 2, _CLAIM_BACKOFF_MAX_S)
                continue
            if count is not None:
                return count
            still_open += 1
            if still_open >= _CLAIM_TRIES:
                return None
            await anyio.sleep(_CLAIM_RETRY_S)
        return None

    async def report() -> None:
        count: int | None = None
        try:
            count = await claim()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if count is None:
                        count = await throttle.take_async(address, refusal.window, final=True)
                    if count:
                        await write(count)
                except Exception as exc:
                    # The type only: a driver's message may quote the address.
                    log.error(
                        "a throttle's aggregate audit row was not written",
                        extra={"detail": type(exc).__name__},
                    )

    task = asyncio.get_running_loop().create_task(report(), context=contextvars.Context())
    pending.add(task)
    task.add_done_callback(pending.discard)
