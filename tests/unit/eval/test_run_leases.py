"""Evaluation runs claimed with leases, on SQLite and PostgreSQL: one replica runs a run, an
expired lease lets another resume it, a runner that lost its lease stops and its late results,
marks and finish are dropped (also when the new claim is its own process's), a stopping runner
gives the run back, and a finished run is never reopened or finished twice."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, update

from appliance.audit.store import AuditLog
from appliance.db.engine import session_scope
from appliance.db.leases import LeaseTerms
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer
from appliance.eval import goldensets
from appliance.eval.models import EvalResult, EvalRun, EvalSet
from appliance.eval.runner import EvalRunner
from appliance.eval.runs import RUNS, EvalRuns
from appliance.eval.service import Evaluation

SEALER = Sealer(os.urandom(32))


def create_run(engine: Engine, *, runner: str = "server", results: int = 0) -> str:
    run_id = uuid.uuid4().hex
    rows = [{"input": f"item {seq}", "expected": "yes"} for seq in range(results)]
    if rows:  # a set with a version, for metrics at the finish
        goldensets.create_set(
            engine, SEALER, name=run_id, task="classify", rows=rows, author="admin"
        )
    with session_scope(engine) as session:
        found = goldensets.get_set(engine, run_id) if rows else None
        if found is None:
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
                total=results,
                created_at=utcnow(),
            )
        )
        session.flush()
        session.add_all(
            EvalResult(run_id=run_id, model="smollm2-135m", seq=seq, status="pending")
            for seq in range(results)
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
    assert claimed is not None and claimed[0].id == run_id
    run, lease = claimed
    assert run.lease_holder == lease.token and lease.token.startswith("first:")
    assert second.claim_next() is None
    assert first.leases.renew([lease]) == {lease}

    expire(engine)  # the first replica died: no renewal since
    resumed = second.claim_next()

    assert resumed is not None and resumed[0].id == run_id
    assert resumed[0].lease_holder == resumed[1].token and resumed[1].token.startswith("second:")
    assert first.leases.renew([lease]) == set()
    first.leases.release([lease])  # not its lease any more
    assert holder_of(engine, run_id) == resumed[1].token


def expire(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(update(RUNS).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def result(runs: EvalRuns, run_id: str, seq: int, holder: str | None, output: str) -> bool:
    return runs.finish_result(
        run_id, "smollm2-135m", seq, holder=holder, status="done", result={"output": output}
    )


async def test_a_lapsed_claims_results_marks_and_finish_are_dropped(engine: Engine) -> None:
    run_id = create_run(engine, results=2)
    runs = runs_of(engine, "one-process")  # two claims of one process share its terms
    first = runs.claim_next()
    assert first is not None
    stale = first[0].lease_holder
    assert runs.mark(run_id, "running", holder=stale) is not None
    assert result(runs, run_id, 0, stale, "early")  # still its run

    expire(engine)  # the first claim stalled past its lease
    second = runs.claim_next()
    assert second is not None
    holder = second[0].lease_holder
    assert stale != holder

    assert not result(runs, run_id, 1, stale, "late")
    assert runs.mark(run_id, "failed", holder=stale) is None
    evaluation = Evaluation(
        engine=engine,
        sealer=SEALER,
        audit=AuditLog(engine),
        # Finishing needs no policies, models, tasks or gateway.
        policies=None,  # type: ignore[arg-type]
        registry=None,  # type: ignore[arg-type]
        tasks=None,  # type: ignore[arg-type]
        task_runner=None,  # type: ignore[arg-type]
        detector=None,  # type: ignore[arg-type]
        overrides=None,  # type: ignore[arg-type]
        lease=runs.leases.terms,
    )
    assert not await evaluation.finish(run_id, holder=stale)
    assert runs.get(run_id).status == "running"
    assert [e.action for e in evaluation.audit.recent()] == []  # no `eval.run_finished`

    assert result(runs, run_id, 1, holder, "kept")
    assert await evaluation.finish(run_id, holder=holder)
    assert runs.get(run_id).status == "completed"
    assert [e.action for e in evaluation.audit.recent()] == ["eval.run_finished"]
    assert runs.progress(run_id)["done"] == 2


def test_a_command_line_run_is_written_only_while_no_server_holds_it(engine: Engine) -> None:
    run_id = create_run(engine, runner="cli", results=1)
    runs = runs_of(engine, "cli")
    with engine.begin() as connection:  # as if a server had claimed it
        connection.execute(update(RUNS).values(lease_holder="server:1"))
    assert not result(runs, run_id, 0, None, "late")
    with engine.begin() as connection:
        connection.execute(update(RUNS).values(lease_holder=None))
    assert result(runs, run_id, 0, None, "kept")


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
    task = asyncio.create_task(stuck_runner(runs).run_next())
    await asyncio.sleep(0.2)
    assert not task.done()

    with engine.begin() as connection:  # another replica took the run over
        connection.execute(update(RUNS).values(lease_holder="other"))

    # Stopped at its next renewal, without an error.
    assert await asyncio.wait_for(task, timeout=10)
    assert holder_of(engine, run_id) == "other"


async def test_a_stopping_runner_gives_the_run_back(engine: Engine) -> None:
    run_id = create_run(engine)
    runs = runs_of(engine, "stopping")
    task = asyncio.create_task(stuck_runner(runs).run_next())
    await asyncio.sleep(0.1)
    assert holder_of(engine, run_id) is not None

    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert holder_of(engine, run_id) is None
    assert runs_of(engine, "next").claim_next() is not None


def test_a_finished_run_is_not_reopened_or_finished_again(engine: Engine) -> None:
    run_id = create_run(engine)
    runs = runs_of(engine, "one")
    assert runs.mark(run_id, "running", holder=None) is not None
    assert runs.mark(run_id, "completed", holder=None, metrics={"ok": 1}) is not None

    assert runs.mark(run_id, "running", holder=None) is None
    assert runs.mark(run_id, "failed", holder=None) is None
    finished = runs.get(run_id)
    assert (finished.status, finished.metrics) == ("completed", {"ok": 1})
    assert runs.claim_next() is None
