"""`make bench-ratelimits`: what counting rate limits in PostgreSQL adds to a request; writes
tests/bench/RATELIMITS.md.

What a request with an API key pays for its limits, side by side, interleaved in rounds:

- the failed-key throttle's check (`FailureThrottle.refuse` for an address under its limit) and
  the inference limit's hit on the key's and the address's buckets (`RateLimiter.hit`), each
  per call, in memory (SQLite's one process) and in `rate_windows` on PostgreSQL, through the
  windows' own pool (`RateWindows`: no ping before a statement, no transaction around it);
- the same hit as the app makes it, from async code (`hit_async`: on a worker thread);
- the same hit from 8 threads at once on one bucket (one row: replicas racing for one key).

PostgreSQL is the tests' throwaway server restarted with durable settings (fsync and
synchronous_commit on), as a production server runs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

import anyio

from appliance.auth.ratelimit import (
    FailureThrottle,
    LocalFailureThrottle,
    LocalRateLimiter,
    RateLimiter,
    RateWindows,
    SharedFailureThrottle,
    SharedRateLimiter,
)
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, upgrade
from tests.bench.audit import durable_postgres
from tests.bench.report import pct

OUT = PROJECT_ROOT / "tests" / "bench" / "RATELIMITS.md"
ROUNDS = 10
CALLS = 200
THREADS = 8
LIMIT = 1_000_000_000  # never reached: this measures the counting, not the refusing
WHATS = ("throttle check", "limit hit (2 buckets)")


def timed(call: Callable[[int], object], calls: int) -> list[float]:
    """Seconds per call."""
    spent = []
    for n in range(calls):
        started = time.perf_counter()
        call(n)
        spent.append(time.perf_counter() - started)
    return spent


def timed_async(call: Callable[[int], Awaitable[object]], calls: int) -> list[float]:
    """Seconds per call, awaited one after another in an event loop."""

    async def run() -> list[float]:
        spent = []
        for n in range(calls):
            started = time.perf_counter()
            await call(n)
            spent.append(time.perf_counter() - started)
        return spent

    return anyio.run(run)


def concurrent(call: Callable[[int], object]) -> tuple[list[float], float]:
    """Seconds per call from `THREADS` threads at once, and calls per second overall."""
    with ThreadPoolExecutor(THREADS) as pool:
        started = time.perf_counter()
        spent = list(pool.map(lambda _: timed(call, CALLS), range(THREADS)))
        elapsed = time.perf_counter() - started
    return [s for each in spent for s in each], THREADS * CALLS / elapsed


def _check(throttle: FailureThrottle, n: int) -> object:
    return throttle.refuse(f"10.0.{n % 50}.1", LIMIT)


def _hit(limiter: RateLimiter, n: int) -> object:
    return limiter.hit([f"inference:apikey:{n % 50}", f"inference:addr:10.0.{n % 50}.1"], LIMIT)


async def _hit_async(limiter: RateLimiter, n: int) -> object:
    return await limiter.hit_async(
        [f"inference:apikey:{n % 50}", f"inference:addr:10.0.{n % 50}.1"], LIMIT
    )


def row(label: str, values: list[float], extra: str = "") -> str:
    return (
        f"| {label} | {len(values)} | {pct(values, 0.5) * 1e6:.0f} | {pct(values, 0.99) * 1e6:.0f} "
        f"| {sum(values) / len(values) * 1e6:.0f} |{extra}"
    )


def main() -> None:
    server = durable_postgres()
    if server is None:
        raise SystemExit("PostgreSQL server binaries not found")
    try:
        url = server.create_database()
        upgrade(url)
        engine = make_engine(url)
        windows = RateWindows(engine)
        shared_limiter, shared_throttle = (
            SharedRateLimiter(windows),
            SharedFailureThrottle(windows, "auth"),
        )
        local_limiter, local_throttle = LocalRateLimiter(), LocalFailureThrottle()
        arms: dict[str, Callable[[int], object]] = {}
        for where, limiter, throttle in (
            ("memory", local_limiter, local_throttle),
            ("PostgreSQL", shared_limiter, shared_throttle),
        ):
            arms[f"{WHATS[0]}, {where}"] = partial(_check, throttle)
            arms[f"{WHATS[1]}, {where}"] = partial(_hit, limiter)
        off_loop = f"{WHATS[1]}, PostgreSQL, from async code"
        async_arm = partial(_hit_async, shared_limiter)
        for arm in arms.values():
            timed(arm, 50)  # the pool's connections made, statements prepared
        timed_async(async_arm, 50)
        spent: dict[str, list[float]] = {label: [] for label in [*arms, off_loop]}
        for _ in range(ROUNDS):
            for label, arm in arms.items():
                spent[label] += timed(arm, CALLS)
            spent[off_loop] += timed_async(async_arm, CALLS)
        racing, rate = concurrent(lambda n: shared_limiter.hit(["inference:apikey:hot"], LIMIT))
        windows.close()
        engine.dispose()
    finally:
        server.stop()

    def p50(label: str) -> float:
        return pct(spent[label], 0.5)

    added = sum(p50(f"{what}, PostgreSQL") - p50(f"{what}, memory") for what in WHATS)
    lines = [
        "# Rate limits: memory and PostgreSQL",
        "",
        f"Written by `make bench-ratelimits` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores (shared with other work), Python {platform.python_version()}, "
        f"{platform.machine()}; load average at start {os.getloadavg()[0]:.1f}. PostgreSQL on "
        "the same machine over TCP loopback, fsync and synchronous_commit on. Method: see "
        "`tests/bench/ratelimits.py`; arms interleaved in "
        f"{ROUNDS} rounds of {CALLS} calls.",
        "",
        "## Per call, one caller",
        "",
        "| what | calls | p50 µs | p99 µs | mean µs |",
        "|---|---|---|---|---|",
        *(row(label, values) for label, values in spent.items()),
        "",
        "A request with an API key makes one throttle check; an inference request also one hit; "
        "each is one statement, one round trip. What PostgreSQL adds to an inference request "
        f"(the p50s): {added * 1000:.2f} ms; the app makes them from async code, on a worker "
        "thread (the last row: the hit with that hop).",
        "",
        f"## One bucket, {THREADS} threads at once",
        "",
        "| what | calls | p50 µs | p99 µs | mean µs | hits/s |",
        "|---|---|---|---|---|---|",
        row("limit hit (1 bucket), PostgreSQL", racing, f" {rate:,.0f} |"),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
