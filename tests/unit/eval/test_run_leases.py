"""Evaluation runs claimed with leases, on SQLite and PostgreSQL: one replica runs a run, an
expired lease lets another resume it, a runner that lost its lease stops, a stopping runner
gives the run back, and a finished run is never reopened or finished twice."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, update

from appliance.db.engine import session_scope
from appliance.db.leases import LeaseTerms
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer
from appliance.eval.models import EvalRun, EvalSet
from appliance.eval.runner import EvalRunner
from appliance.eval.runs import RUNS, EvalRuns

SEALER = Sealer(os.urandom(32))


def create_run(engine: Engine, *, runner: str = "server") -> str:
    run_id = uuid.uuid4().hex
    with session_scope(engine) as session:
        found = EvalSet(name=run_id, task="classify", created_by="admin", created_at=utcnow())
        session.add(found)
        session.flush()
        session.add(
            EvalRun(
                id=run_id,
                set_id=found.id or 0,
                set_name=run_id,
                version=1,
                task="classify",
                models=["smollm2-135m"],
                params={"runner": runner},
                actor={"id": "admin", "role": "admin"},
                status="queued",
                total=0,
                created_at=utcnow(),
            )
        )
    return run_id


def runs_of(engine: Engine, holder: str, lease_s: float = 30) -> EvalRuns:
    return EvalRuns(engine, SEALER, lease=LeaseTerms(holder=holder, lease_s=lease_s))


def holder_of(engine: Engine, run_id: str) -> str | None:
    with session_scope(engine) as session:
        run = session.get(EvalRun, run_id)
        assert run is not None
        return run.lease_holder


def test_one_replica_claims_a_run_and_another_resumes_it_after_expiry(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    create_run(engine, runner="cli")  # the command line's: no server claims it
    run_id = create_run(engine)
    first, second = runs_of(engine, "first"), runs_of(other_engine(), "second")

    claimed = first.claim_next()
    assert claimed is not None and claimed.id == run_id
    assert second.claim_next() is None
    assert first.renew(run_id) and not second.renew(run_id)

    with engine.begin() as connection:  # the first replica died: no renewal since
        connection.execute(update(RUNS).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    resumed = second.claim_next()

    assert resumed is not None and resumed.id == run_id and resumed.lease_holder == "second"
    assert not first.renew(run_id)
    first.release(run_id)  # not its lease any more
    assert holder_of(engine, run_id) == "second"


class Stuck(EvalRunner):
    """A runner whose runs never end by themselves."""

    async def run(self, run: EvalRun, **_: Any) -> None:
        await asyncio.Event().wait()


class Book:
    def __init__(self, runs: EvalRuns) -> None:
        self.runs = runs


def stuck_runner(runs: EvalRuns) -> Stuck:
    class Ready:
        status = "ready"

    return Stuck(Book(runs), task_runner=None, detector=Ready())  # type: ignore[arg-type]


async def test_a_runner_that_lost_its_lease_stops_the_run(engine: Engine) -> None:
    run_id = create_run(engine)
    runs = runs_of(engine, "slow", lease_s=0.3)
    run = runs.claim_next()
    assert run is not None
    task = asyncio.create_task(stuck_runner(runs).run_leased(run))
    await asyncio.sleep(0.2)
    assert not task.done()

    with engine.begin() as connection:  # another replica took the run over
        connection.execute(update(RUNS).values(lease_holder="other"))

    await asyncio.wait_for(task, timeout=10)  # stopped at its next renewal, without an error
    assert holder_of(engine, run_id) == "other"


async def test_a_stopping_runner_gives_the_run_back(engine: Engine) -> None:
    run_id = create_run(engine)
    runs = runs_of(engine, "stopping")
    run = runs.claim_next()
    assert run is not None
    task = asyncio.create_task(stuck_runner(runs).run_leased(run))
    await asyncio.sleep(0.1)

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert holder_of(engine, run_id) is None
    assert runs_of(engine, "next").claim_next() is not None


def test_a_finished_run_is_not_reopened_or_finished_again(engine: Engine) -> None:
    run_id = create_run(engine)
    runs = runs_of(engine, "one")
    assert runs.mark(run_id, "running") is not None
    assert runs.mark(run_id, "completed", metrics={"ok": 1}) is not None

    assert runs.mark(run_id, "running") is None
    assert runs.mark(run_id, "failed") is None
    finished = runs.get(run_id)
    assert (finished.status, finished.metrics) == ("completed", {"ok": 1})
    assert runs.claim_next() is None
