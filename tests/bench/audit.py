"""`make bench-audit`: audit append latency and verify throughput; writes tests/bench/AUDIT.md.

- append latency p50/p99 (one event per transaction, committed durably, through
  `AuditLog.append_sync`: serialised append, hash, a checkpoint every 1000 events with a
  witness file) on SQLite (WAL, synchronous=FULL) and PostgreSQL (fsync on,
  synchronous_commit on), with 1 and 16 concurrent writer threads;
- verify throughput (events/s) over a 20,000-event chain on each.

PostgreSQL is the throwaway server the tests use, restarted here with durable settings (the
test suite runs it with fsync off for speed, which would flatter these numbers).
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from appliance.audit.keys import load_or_create
from appliance.audit.store import AuditLog, AuditRecord
from appliance.audit.verify import verify
from appliance.audit.witness import FileWitness
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, upgrade
from tests.bench.report import pct
from tests.support.postgres import PostgresServer, find_bin_dir

OUT = PROJECT_ROOT / "tests" / "bench" / "AUDIT.md"
APPENDS = 1600
VERIFY_EVENTS = 20_000


def event(n: int) -> AuditRecord:
    return AuditRecord(
        actor=f"user:{n % 7}",
        role="staff",
        source="127.0.0.1",
        action="chat.completion",
        outcome="redacted",
        policy="default@58389d164402",
        entity_counts={"PERSON": 1, "EMAIL_ADDRESS": 1},
        model="smollm2-135m",
        tier="small",
        request_id=f"{n:032x}",
        status_code=200,
    )


def appends(log: AuditLog, writers: int) -> tuple[list[float], float]:
    per_writer = APPENDS // writers
    latencies: list[list[float]] = [[] for _ in range(writers)]
    barrier = threading.Barrier(writers + 1)

    def run(index: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            started = time.perf_counter()
            log.append_sync(event(index * per_writer + i))
            latencies[index].append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [value for values in latencies for value in values]
    return flat, len(flat) / elapsed


def bench_database(label: str, engine: Engine, tmp: Path, lines: list[str]) -> None:
    key = load_or_create(tmp / f"{label}.pem")
    log = AuditLog(engine, key=key, witness=FileWitness(tmp / f"{label}-witness.jsonl"))
    log.append_sync(event(0))  # connection pool and first checkpoint lookup warmed
    for writers in (1, 16):
        latencies, rate = appends(log, writers)
        lines.append(
            f"| {label} | {writers} | {len(latencies)} | {pct(latencies, 0.5) * 1000:.2f} "
            f"| {pct(latencies, 0.99) * 1000:.2f} | {rate:.0f} |"
        )
        print(lines[-1], flush=True)


def build_and_verify(label: str, engine: Engine, tmp: Path) -> str:
    key = load_or_create(tmp / f"{label}-v.pem")
    log = AuditLog(engine, key=key)
    for first in range(0, VERIFY_EVENTS, 1000):
        log.append_many_sync([event(n) for n in range(first, first + 1000)])
    started = time.perf_counter()
    report = verify(engine, key=key.verify_key)
    elapsed = time.perf_counter() - started
    assert report.ok and report.events == VERIFY_EVENTS, report.summary()
    line = (
        f"| {label} | {report.events} | {report.checkpoints} | {elapsed:.2f} "
        f"| {report.events / elapsed:,.0f} |"
    )
    print(line, flush=True)
    return line


def durable_postgres() -> PostgresServer | None:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return None
    server = PostgresServer.start(bin_dir)
    options = f"-p {server.port} -k {server.root} -c listen_addresses=127.0.0.1"
    log = str(server.root / "server.log")
    server._run(
        "pg_ctl", "-D", str(server.root / "data"), "-o", options, "-w", "-l", log, "restart"
    )
    return server


def main() -> None:
    lines = [
        "# Audit trail benchmark",
        "",
        f"Written by `make bench-audit` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} cores (shared with other work), Python {platform.python_version()}, "
        f"{platform.machine()}; load average at start {os.getloadavg()[0]:.1f} (latency "
        "here is mostly fsync and waiting for a core, so a busy machine shows in the tail). "
        "Method: see `tests/bench/audit.py`.",
        "",
        "## Append latency (one event per durable transaction)",
        "",
        "| database | writers | appends | p50 ms | p99 ms | appends/s |",
        "|---|---|---|---|---|---|",
    ]
    verify_lines = [
        "",
        "## Verify throughput",
        "",
        "| database | events | checkpoints | seconds | events/s |",
        "|---|---|---|---|---|",
    ]
    server = durable_postgres()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        targets = [("SQLite", f"sqlite:///{tmp / 'bench.db'}", f"sqlite:///{tmp / 'verify.db'}")]
        if server is not None:
            targets.append(("PostgreSQL", server.create_database(), server.create_database()))
        try:
            for label, url, verify_url in targets:
                for target in (url, verify_url):
                    upgrade(target)
                engine = make_engine(url)
                bench_database(label, engine, tmp, lines)
                engine.dispose()
                engine = make_engine(verify_url)
                verify_lines.append(build_and_verify(label, engine, tmp))
                engine.dispose()
        finally:
            if server is not None:
                server.stop()
    if server is None:
        lines.append("| PostgreSQL | - | - | - | - | not measured: no server binaries |")
    target = next(
        (ln for ln in lines if ln.startswith("| SQLite | 1 |")),
        "",
    )
    p99 = float(target.split("|")[5]) if target else float("nan")
    verdict = "met" if p99 <= 5.0 else "NOT met"
    lines += [
        "",
        f"Target p99 ≤ 5 ms on SQLite with one writer: **{verdict}** ({p99:.2f} ms).",
        "",
        "Each append is `BEGIN IMMEDIATE` (SQLite) or an advisory lock (PostgreSQL), reading "
        "the head, hashing, inserting and committing with fsync; with 16 writers the appends "
        "queue on that one lock by design (one linear chain), so the latency includes the wait.",
    ]
    OUT.write_text("\n".join(lines + verify_lines) + "\n", encoding="utf-8")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
