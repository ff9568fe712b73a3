"""Work counted by status for `/metrics`, on SQLite and PostgreSQL: batch jobs and evaluation
runs by status, and the items and results of the open ones only (`Batches.counts`,
`EvalRuns.counts`, and the `(kind, status)` map the scrape reads)."""

from __future__ import annotations

from sqlalchemy import Engine, update

from appliance.api.metrics import work_progress
from appliance.batches.service import ITEMS, JOBS
from appliance.db.engine import session_scope
from appliance.eval.models import EvalResult
from appliance.eval.runs import RUNS
from tests.unit.batches.test_claims import create_job, replica
from tests.unit.eval.test_run_leases import create_run, runs_of


def add_results(engine: Engine, run_id: str, statuses: list[str]) -> None:
    with session_scope(engine) as session:
        session.add_all(
            EvalResult(run_id=run_id, model="smollm2-135m", seq=seq, status=status)
            for seq, status in enumerate(statuses)
        )


def test_open_work_is_counted_by_status_and_finished_work_only_by_its_parent(
    engine: Engine,
) -> None:
    batches, runs = replica(engine, "metrics"), runs_of(engine, "metrics")
    open_job, finished_job = create_job(engine, 3), create_job(engine, 4)
    with engine.begin() as connection:
        connection.execute(
            update(ITEMS)
            .where(ITEMS.c.job_id == open_job.id, ITEMS.c.seq == 0)
            .values(status="done")
        )
        connection.execute(update(JOBS).where(JOBS.c.id == open_job.id).values(status="running"))
        connection.execute(
            update(JOBS).where(JOBS.c.id == finished_job.id).values(status="completed")
        )
    queued_run, finished_run = create_run(engine), create_run(engine)
    add_results(engine, queued_run, ["pending", "done", "failed"])
    add_results(engine, finished_run, ["done", "done"])
    with engine.begin() as connection:
        connection.execute(update(RUNS).where(RUNS.c.id == finished_run).values(status="failed"))

    counts = batches.counts()
    assert counts.parents == {"running": 1, "completed": 1}
    assert counts.children == {"pending": 2, "done": 1}  # not the finished job's four
    counted = runs.counts()
    assert counted.parents == {"queued": 1, "failed": 1}
    assert counted.children == {"pending": 1, "done": 1, "failed": 1}

    assert work_progress(batches, runs) == {
        ("batch_jobs", "running"): 1,
        ("batch_jobs", "completed"): 1,
        ("batch_items", "pending"): 2,
        ("batch_items", "done"): 1,
        ("eval_runs", "queued"): 1,
        ("eval_runs", "failed"): 1,
        ("eval_results", "pending"): 1,
        ("eval_results", "done"): 1,
        ("eval_results", "failed"): 1,
    }


def test_nothing_to_count_is_empty(engine: Engine) -> None:
    counts = replica(engine, "metrics").counts()
    assert counts.parents == {} and counts.children == {}
