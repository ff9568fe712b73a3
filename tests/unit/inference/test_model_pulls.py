"""`ModelPulls` against the FAKE Ollama (httpx MockTransport replaying docs/api.md): progress
across layers and nodes, refusals before any backend is asked, and the audit rows; and pulls as
rows of a database (SQLite and PostgreSQL) that replicas share: the same pull twice is refused
on any replica, a pull whose replica stopped or died is resumed by another, and a replica whose
lease passed to another records no end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, update

from appliance.auth.actor import Actor
from appliance.db.leases import LeaseTerms
from appliance.db.models import utcnow
from appliance.db.pulls import PULLS, PullRows
from appliance.errors import Conflict, InvalidInput
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.ollama import OllamaBackend, PullProgress
from appliance.inference.pulls import ModelPulls, PullEvent, PullJob, StoredRequester
from appliance.inference.registry import Registry
from tests.support.fake_ollama import FakeOllamaTransport
from tests.support.leases import GatedLeases

ADMIN = Actor(id="user:admin", role="admin", source="127.0.0.1")


class Trail:
    """Collects the pull events the app would write to the audit trail; a guarded one in a
    transaction of `engine` with its condition, as the app's audit transaction does."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.records: list[PullEvent] = []

    async def __call__(
        self, event: PullEvent, *, only_if: Callable[[Any], bool] | None = None
    ) -> bool:
        if only_if is not None:
            with self.engine.begin() as connection:
                if not only_if(connection):
                    return False
        self.records.append(event)
        return True


class Embedded:
    """A backend without `pull` (as the embedded engine)."""

    name = "llamacpp"

    def models(self) -> list[Any]:
        return []


def pool(*fakes: FakeOllamaTransport) -> BalancedBackend:
    nodes = [
        Node(
            f"http://node-{i}",
            OllamaBackend(host=f"http://node-{i}", name=f"ollama-{i}", transport=fake.transport()),
            max_concurrency=4,
            breaker=CircuitBreaker(failure_threshold=3, reset_after_s=30),
        )
        for i, fake in enumerate(fakes)
    ]
    return BalancedBackend("ollama", nodes, first_token_timeout_s=5, total_timeout_s=30)


def new_job(requester: Actor, *, node: str) -> PullJob:
    """A running pull of `qwen2.5:0.5b` on one node, as `start` makes it."""
    return PullJob(
        id="a" * 32,
        backend="ollama",
        model="qwen2.5:0.5b",
        nodes=[node],
        requester=StoredRequester.of(requester),
    )


def rows(engine: Engine, holder: str = "replica-0") -> PullRows:
    return PullRows(engine, LeaseTerms(holder=holder, lease_s=30))


def test_progress_folds_layers_and_nodes() -> None:
    job = PullJob(
        id="j", backend="ollama", model="m", nodes=["a", "b"], requester=StoredRequester("x")
    )
    job.note(PullProgress(status="pulling manifest"))
    assert job.percent == 0
    job.note(PullProgress(status="downloading d1", digest="d1", total=300))
    job.note(PullProgress(status="downloading d2", digest="d2", total=100, completed=100))
    # Node a: 100 of 400 bytes, one node of two.
    assert job.percent == int(100 * (0.25 / 2))
    job.node_index, job.layers = 1, {}
    job.note(PullProgress(status="downloading d1", digest="d1", total=10, completed=5))
    assert job.percent == 75
    assert job.public()["node"] == "b"


async def test_a_pool_pull_runs_on_every_node_and_is_audited(engine: Engine) -> None:
    fakes = (FakeOllamaTransport(), FakeOllamaTransport())
    trail = Trail(engine)
    registry = Registry([Embedded(), pool(*fakes)])  # type: ignore[list-item]
    pulls = ModelPulls(registry, trail, rows(engine))
    assert pulls.pullable() == ["ollama", "ollama-0", "ollama-1"]

    job = await pulls.start(ADMIN, backend="ollama", model="qwen2.5:0.5b")
    assert job.task is not None
    await job.task

    assert job.status == "succeeded" and job.percent == 100 and job.error is None
    for fake in fakes:
        assert [b["model"] for p, b in fake.requests if p == "/api/pull"] == ["qwen2.5:0.5b"]
    assert [(r.action, r.outcome) for r in trail.records] == [
        ("model.pull_started", "ok"),
        ("model.pulled", "ok"),
    ]
    assert trail.records[1].details["nodes"] == 2
    assert "qwen2.5:0.5b" in registry.names()
    # The job's end is in the database, as every replica reads it.
    stored = PullJob.from_row(rows(engine).get(job.id) or {})
    assert (stored.status, stored.percent, stored.requester.id) == ("succeeded", 100, ADMIN.id)
    assert stored.public()["total_bytes"] == sum(FakeOllamaTransport().library["qwen2.5:0.5b"])


async def test_refusals_name_the_field_and_ask_no_backend(engine: Engine) -> None:
    fake = FakeOllamaTransport(pull_steps=50)
    trail = Trail(engine)
    registry = Registry([Embedded(), pool(fake)])  # type: ignore[list-item]
    pulls = ModelPulls(registry, trail, rows(engine))
    with pytest.raises(InvalidInput) as embedded:
        await pulls.start(ADMIN, backend="llamacpp", model="llama3.2:3b")
    assert embedded.value.field == "backend" and "cannot pull" in embedded.value.message
    with pytest.raises(InvalidInput) as unknown:
        await pulls.start(ADMIN, backend="elsewhere", model="llama3.2:3b")
    assert unknown.value.field == "backend" and "ollama-0" in unknown.value.message
    with pytest.raises(InvalidInput) as bad:
        await pulls.start(ADMIN, backend="ollama", model="rm -rf /")
    assert bad.value.field == "model"
    assert fake.requests == [] and trail.records == []
    # The same pull twice at once is a conflict; the first one still completes.
    gated = Gated()
    pulls.targets = lambda name: [gated]  # type: ignore[method-assign]
    first = await pulls.start(ADMIN, backend="ollama", model="llama3.2:3b")
    with pytest.raises(Conflict) as twice:
        await pulls.start(ADMIN, backend="ollama", model="llama3.2:3b")
    assert twice.value.field == "model"
    gated.go.set()
    assert first.task is not None
    await first.task
    assert first.status == "succeeded"


class Stalling:
    """A puller whose download never ends (a big model), until it is stopped."""

    name = "ollama-0"

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        yield PullProgress(status="pulling manifest")
        await asyncio.Event().wait()


def replica(engine: Engine, holder: str, *fakes: FakeOllamaTransport) -> tuple[ModelPulls, Trail]:
    """One replica's pulls: its own registry and engine, the shared database."""
    trail = Trail(engine)
    registry = Registry([Embedded(), pool(*fakes)])  # type: ignore[list-item]
    return ModelPulls(registry, trail, rows(engine, holder)), trail


async def test_the_same_pull_twice_is_refused_on_another_replica(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    first, _ = replica(engine, "first", FakeOllamaTransport())
    second, second_trail = replica(other_engine(), "second", FakeOllamaTransport())
    first.targets = lambda name: [Stalling()]  # type: ignore[method-assign]
    running = await first.start(ADMIN, backend="ollama", model="llama3.2:3b")

    with pytest.raises(Conflict) as twice:
        await second.start(ADMIN, backend="ollama", model="llama3.2:3b")

    assert twice.value.field == "model" and second_trail.records == []
    # The other replica lists the running pull and shows it.
    assert [j.id for j in second.jobs()] == [running.id]
    assert second.get(running.id).status == "running"
    await first.aclose()


async def test_a_stopped_replicas_pull_is_resumed_by_another(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    stopping, stopping_trail = replica(engine, "stopping", FakeOllamaTransport())
    stopping.targets = lambda name: [Stalling()]  # type: ignore[method-assign]
    job = await stopping.start(ADMIN, backend="ollama-0", model="qwen2.5:0.5b")
    await asyncio.sleep(0.05)

    await stopping.aclose()  # a graceful shutdown gives the pull back, unfinished

    assert [r.action for r in stopping_trail.records] == ["model.pull_started"]
    fake = FakeOllamaTransport()
    other, other_trail = replica(other_engine(), "other", fake)
    await resumed_by(other, job.id)
    assert [b["model"] for p, b in fake.requests if p == "/api/pull"] == ["qwen2.5:0.5b"]
    assert [(r.action, r.outcome, r.requester.id) for r in other_trail.records] == [
        ("model.pulled", "ok", ADMIN.id)
    ]
    assert stopping.get(job.id).status == "succeeded"  # as every replica sees it


async def test_a_dead_replicas_pull_is_resumed_once_its_lease_ran_out(
    engine: Engine, other_engine: Callable[[], Engine]
) -> None:
    # A replica that died right after storing the job: nothing runs it, nothing renews it.
    dead = rows(engine, "dead")
    job = new_job(ADMIN, node="ollama-0")
    assert dead.add(job.row(), keep_finished=50) is not None
    fake = FakeOllamaTransport()
    other, other_trail = replica(other_engine(), "other", fake)
    assert await other.store.claim_abandoned() is None  # its lease still runs

    with engine.begin() as connection:
        connection.execute(update(PULLS).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    await resumed_by(other, job.id)
    assert [(r.action, r.outcome) for r in other_trail.records] == [("model.pulled", "ok")]
    assert "qwen2.5:0.5b" in other.registry.names()


async def test_a_resumer_stopped_while_it_claims_gives_the_pull_back(engine: Engine) -> None:
    dead = rows(engine, "dead")  # its replica died; its lease ran out
    job = new_job(ADMIN, node="ollama-0")
    assert dead.add(job.row(), keep_finished=50) is not None
    with engine.begin() as connection:
        connection.execute(update(PULLS).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    stopping, _ = replica(engine, "stopping", FakeOllamaTransport())
    store = stopping.store
    assert isinstance(store, PullRows)
    store.leases = gated = GatedLeases(engine, PULLS, store.leases.terms)

    resumer = asyncio.create_task(stopping.run_forever(idle_s=0.05))
    for _ in range(400):  # a hang guard, not a speed target
        if gated.entered.is_set():
            break
        await asyncio.sleep(0.025)
    resumer.cancel()  # a shutdown while the claim waits on the database
    await asyncio.sleep(0.05)
    gated.go.set()  # the claim commits after the cancellation
    await asyncio.gather(resumer, return_exceptions=True)

    assert resumer.cancelled() and len(gated.threads) == 2  # claimed, then given back
    stored = rows(engine).get(job.id)
    assert stored is not None
    assert (stored["status"], stored["lease_holder"]) == ("running", None)


class Gated:
    """A puller that finishes once `go` is set."""

    name = "ollama-0"

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        yield PullProgress(status="pulling manifest")
        await self.go.wait()
        yield PullProgress(status="success")


async def test_a_replica_whose_lease_passed_to_another_records_no_end(engine: Engine) -> None:
    stalled, trail = replica(engine, "stalled", FakeOllamaTransport())
    gated = Gated()
    stalled.targets = lambda name: [gated]  # type: ignore[method-assign]
    job = await stalled.start(ADMIN, backend="ollama-0", model="qwen2.5:0.5b")
    with engine.begin() as connection:  # it stalled past its lease; another replica took over
        connection.execute(update(PULLS).values(lease_holder="other:1"))

    gated.go.set()  # its pull ends before it renews (every 10 s)
    assert job.task is not None
    await asyncio.wait_for(job.task, timeout=30)

    assert [r.action for r in trail.records] == ["model.pull_started"]  # no `model.pulled`
    stored = rows(engine).get(job.id)
    assert stored is not None
    assert (stored["status"], stored["lease_holder"]) == ("running", "other:1")


async def resumed_by(pulls: ModelPulls, job_id: str) -> None:
    """Run `pulls`' resuming loop until the job has succeeded."""
    resumer = asyncio.create_task(pulls.run_forever(idle_s=0.05))
    try:
        for _ in range(400):
            if pulls.get(job_id).status == "succeeded":
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"the pull was not resumed: {pulls.get(job_id).public()}")
    finally:
        resumer.cancel()
        await asyncio.gather(resumer, return_exceptions=True)
