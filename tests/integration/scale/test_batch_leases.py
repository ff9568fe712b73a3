"""300 batch items on three `appliance serve` replicas sharing one PostgreSQL, one replica
`kill -9`'d while it runs an item: every item ends done exactly once (one result each, none lost),
the items the dead replica held are run again by the others once their leases ran out, the job is
marked completed once, and `appliance audit verify` passes on the chain all three appended to.

An item that was in flight at the kill has run twice, in part: the dead replica's request may
have written its audit row before the kill, and the retry writes its own under the same request
id. The test holds that every result has its audit row, and that an item answered twice was
claimed more than once.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select

from appliance.audit.store import EVENTS_TABLE
from appliance.batches.service import ITEMS
from appliance.db.engine import make_engine
from tests.bench.batch import LABELS, submit
from tests.support.process import appliance_cli
from tests.support.replicas import Replicas

pytestmark = pytest.mark.postgresql

COUNT = 300
LEASE_S = 5.0
DEADLINE_S = 1800
"""A guard against a hang, not a speed target: on a loaded two-core machine 300 items take
minutes."""


def holders(engine: Engine, job_id: str) -> dict[int, str]:
    """seq -> holder of the items leased right now."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(ITEMS.c.seq, ITEMS.c.lease_holder).where(
                ITEMS.c.job_id == job_id,
                ITEMS.c.status == "pending",
                ITEMS.c.lease_holder.is_not(None),
            )
        )
        return {int(seq): str(holder) for seq, holder in rows}


def pid_of(holder: str) -> int:
    return int(holder.split(":")[-3])  # host:pid:random:claim


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_300_items_on_three_replicas_with_one_killed_run_exactly_once(
    start_replicas: Callable[..., Replicas],
) -> None:
    replicas = start_replicas(
        3,
        lease_s=str(LEASE_S),
        # A cheap task on purpose: classify scores the labels; the path, not the model, is
        # what is under test. Detection in each server's own threads keeps three replicas light.
        max_tokens="4",
        detector_processes="0",
        batch_quiet_s="0",
        batch_item_pause_s="0",
    )
    pids = {i: process.pid for i, process in enumerate(replicas.processes) if process}
    clients = replicas.clients(replicas.key("tasks", "admin"))
    engine = make_engine(replicas.env["APPLIANCE_DATABASE_URL"])
    try:
        # The batch benchmark's job: classify sentences of three kinds.
        job_id = submit(clients[0], COUNT)
        seen: set[int] = set()  # pids seen holding items of the job

        def victim_in_flight() -> dict[int, str]:
            held = holders(engine, job_id)
            seen.update(pid_of(h) for h in held.values())
            done = clients[1].get(f"/api/v1/batches/{job_id}").json()["counts"]["done"]
            # Mid-run: some work done, and the replica to kill is inside an item.
            on_victim = {s: h for s, h in held.items() if pid_of(h) == pids[2]}
            return on_victim if done >= COUNT // 5 else {}

        sampled = wait_until(victim_in_flight, "replica 2 to hold an item mid-run")
        replicas.kill(2)
        # Only the claims it still held when it died: one it finished between the sample and
        # the kill is done once, rightly (a claim's token names that claim alone).
        in_flight = {s: h for s, h in holders(engine, job_id).items() if sampled.get(s) == h}

        def completed() -> dict[str, Any] | None:
            held = holders(engine, job_id)
            seen.update(pid_of(h) for h in held.values())
            status: dict[str, Any] = clients[0].get(f"/api/v1/batches/{job_id}").json()
            return status if status["status"] == "completed" else None

        status = wait_until(completed, "the job to complete")
        results = [
            json.loads(line)
            for line in clients[1].get(f"/api/v1/batches/{job_id}/results").text.splitlines()
        ]
        with engine.connect() as connection:
            items = {
                int(row.seq): row
                for row in connection.execute(select(ITEMS).where(ITEMS.c.job_id == job_id))
            }
            audited: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
            for request_id, event_id, code in connection.execute(
                select(
                    EVENTS_TABLE.c.request_id, EVENTS_TABLE.c.id, EVENTS_TABLE.c.status_code
                ).where(EVENTS_TABLE.c.request_id.startswith(f"batch:{job_id}:"))
            ):
                audited[str(request_id)].append((str(event_id), code))
    finally:
        for client in clients:
            client.close()
        engine.dispose()

    # Every item done, exactly one result each, in order, none lost.
    assert status["counts"] == {"total": COUNT, "done": COUNT, "failed": 0, "pending": 0}
    assert [r["seq"] for r in results] == list(range(COUNT))
    assert [r["id"] for r in results] == list(range(COUNT))
    assert all(r["status"] == "done" and r["output"]["label"] in LABELS for r in results)
    assert all(item.lease_holder is None for item in items.values())
    # The work was shared, and the dead replica's items were taken over after their leases.
    assert set(pids.values()) <= seen, (pids, seen)
    for seq in in_flight:
        assert items[seq].attempts >= 2, seq
    # Every result has its own audit row; an item answered more than once (an answer the dead
    # replica audited but never stored, then the retry's) is one that was claimed again.
    # Refusals a transient failure caused before a retry are audited too, and not counted here.
    assert set(audited) == {f"batch:{job_id}:{seq}" for seq in range(COUNT)}
    for seq, item in items.items():
        rows = audited[f"batch:{job_id}:{seq}"]
        assert item.audit_id in {event_id for event_id, _ in rows}, seq
        assert sum(code == 200 for _, code in rows) <= item.attempts, (seq, rows)
    # Marked completed once, by one of the live replicas.
    completions = [
        sum("batch job completed" in line for line in replicas.log(i).read_text().splitlines())
        for i in range(3)
    ]
    assert sum(completions) == 1 and completions[2] == 0, completions
    # One chain, appended to by three replicas (and a dead one), still verifies.
    verified = appliance_cli(replicas.env_of(0), "audit", "verify")
    assert verified.returncode == 0, verified.stdout
