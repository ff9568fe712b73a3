"""Fixed-window rate limits and failure throttles: in the database when several processes serve
it, in memory when one does.

Windows are fixed and aligned to the clock (a 60-second window is a calendar minute), so every
process agrees on the window a hit falls in without asking the others.

- **PostgreSQL** (several `appliance serve` replicas may share it): the windows are rows of
  `rate_windows` (`RateWindows`), counted on the database's clock. A hit is one
  `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` for all of its buckets, so a limit holds
  across every replica as it would in one process; the table is UNLOGGED (migration 0014), so a
  hit does not wait for the disk (about 0.5 ms, tests/bench/RATELIMITS.md). When the database
  cannot be reached the request is refused (503 `rate_limits_unavailable`), never served
  without a limit.
- **SQLite**: one process serves (`appliance serve` holds a lock beside the database file and a
  second server refuses to start), so its memory holds the windows (`LocalRateLimiter`,
  `LocalFailureThrottle`) and no request pays a write on a database whose writers take turns.

A throttle counts the refusals of each address and window for one aggregate audit row
(`report_when_over`): every process that refused the address in a window asks for the count when
the window ends, and one of them gets it (a shared window's `reported` flag is set by one
`UPDATE`), so the row is written once however many replicas did the refusing.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from sqlalchemy import Connection, Engine, TextClause, text
from sqlalchemy.exc import SQLAlchemyError

from appliance.audit.events import Event
from appliance.audit.store import AuditLog
from appliance.errors import ApplianceError, RateLimitsUnavailable

log = logging.getLogger("appliance.auth")

_MAX_ENTRIES = 50_000
"""Buckets a process keeps in memory before it drops finished windows."""


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


class RateWindows:
    """The `rate_windows` table: windows every process on the database counts in together.

    A bucket's name holds addresses and user names; the table keys it by a digest, bounded in
    length whatever a caller sends. Each call is one statement (on PostgreSQL without a
    transaction around it).
    """

    def __init__(self, engine: Engine) -> None:
        self._connect: Callable[[], AbstractContextManager[Connection]] = engine.begin
        if engine.dialect.name == "postgresql":
            # No BEGIN and COMMIT around the one statement: one round trip. (Not on SQLite,
            # where pysqlite's autocommit can lose a connection's first write.)
            self._connect = engine.execution_options(isolation_level="AUTOCOMMIT").connect
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
        self._claim = text(
            "UPDATE rate_windows SET reported = TRUE "  # noqa: S608 - constants only
            "WHERE bucket = :bucket AND window_start = :start AND NOT reported "
            f"AND (window_end <= {self._clock} OR :final) RETURNING refusals"
        )
        self._open = text(
            "SELECT 1 FROM rate_windows "  # noqa: S608 - constants only
            f"WHERE bucket = :bucket AND window_start = :start AND window_end > {self._clock}"
        )
        self._prune = text(
            f"DELETE FROM rate_windows WHERE window_end < {self._clock} - :keep"  # noqa: S608
        )
        self._prune_lock = threading.Lock()
        self._next_prune = 0.0

    @staticmethod
    def key(bucket: str) -> str:
        """The table's key for a bucket name."""
        return hashlib.blake2b(bucket.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def _hit_statement(self, count: int) -> TextClause:
        statement = self._statements.get(count)
        if statement is None:
            rows = ", ".join(
                f"(:b{i}, {self._start}, {self._start} + :span, 1, 0, FALSE)" for i in range(count)
            )
            statement = text(
                "INSERT INTO rate_windows AS w "  # noqa: S608 - constants only
                f"(bucket, window_start, window_end, hits, refusals, reported) VALUES {rows} "
                "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = w.hits + 1 "
                f"RETURNING hits, window_end - {self._clock}"
            )
            self._statements[count] = statement
        return statement

    def _run(self, statement: TextClause, params: dict[str, Any]) -> list[Any]:
        try:
            with self._connect() as connection:
                rows = list(connection.execute(statement, params))
        except SQLAlchemyError as exc:
            # The error's type only: its message may quote a bucket (an address, a user name).
            log.error("rate-limit windows unreachable", extra={"detail": type(exc).__name__})
            raise RateLimitsUnavailable(
                "the shared rate-limit counters (the database) cannot be reached; the request "
                "is refused rather than served without a limit"
            ) from exc
        self._prune_now_and_then()
        return rows

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
        """The refusals of the bucket's window that began at `start`, to the first caller after
        it ended (or now, with `final`); 0 to every later one; None while it is still open."""
        params = {"bucket": self.key(bucket), "start": start, "now": _db_now(now)}
        rows = self._run(self._claim, params | {"final": final})
        if rows:
            return int(rows[0][0])
        if not final and self._run(self._open, params):
            return None
        return 0

    def prune(self, *, now: float | None = None) -> int:
        """Drop windows that ended more than ten minutes ago; any process may, any time."""
        with self._connect() as connection:
            return connection.execute(self._prune, {"keep": _KEEP_MS, "now": _db_now(now)}).rowcount

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
        """See `FailureThrottle.take`: the window's `reported` flag goes to one caller."""
        count: int | None = 0
        try:
            count = self.windows.claim(self._bucket(address), window, final=final, now=now)
            return count
        finally:
            if count is not None:  # taken, or given up: this process is done with the window
                with self._lock:
                    self._refused.discard((address, window))


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

    async def report() -> None:
        count: int | None = None
        try:
            await anyio.sleep(refusal.ends_in)
            for _ in range(_CLAIM_TRIES):
                count = throttle.take(address, refusal.window)
                if count is not None:
                    break
                await anyio.sleep(_CLAIM_RETRY_S)
        except ApplianceError:
            count = 0  # the database is out of reach; logged where it failed
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if count is None:
                        count = throttle.take(address, refusal.window, final=True)
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
