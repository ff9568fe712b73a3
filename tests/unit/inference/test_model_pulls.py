"""`ModelPulls` against the FAKE Ollama (httpx MockTransport replaying docs/api.md): progress
across layers and nodes, refusals before any backend is asked, and the audit rows."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.auth.actor import Actor
from appliance.errors import Conflict, InvalidInput
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.ollama import OllamaBackend, PullProgress
from appliance.inference.pulls import ModelPulls, PullEvent, PullJob
from appliance.inference.registry import Registry
from tests.support.fake_ollama import FakeOllamaTransport

ADMIN = Actor(id="user:admin", role="admin", source="127.0.0.1")


class Trail:
    """Collects the pull events the app would write to the audit trail."""

    def __init__(self) -> None:
        self.records: list[PullEvent] = []

    async def __call__(self, event: PullEvent) -> None:
        self.records.append(event)


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


def test_progress_folds_layers_and_nodes() -> None:
    job = PullJob(id="j", backend="ollama", model="m", nodes=["a", "b"], actor="user:x")
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


async def test_a_pool_pull_runs_on_every_node_and_is_audited() -> None:
    fakes = (FakeOllamaTransport(), FakeOllamaTransport())
    trail = Trail()
    registry = Registry([Embedded(), pool(*fakes)])  # type: ignore[list-item]
    pulls = ModelPulls(registry, trail)
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


async def test_refusals_name_the_field_and_ask_no_backend() -> None:
    fake = FakeOllamaTransport(pull_steps=50)
    trail = Trail()
    pulls = ModelPulls(Registry([Embedded(), pool(fake)]), trail)  # type: ignore[list-item]
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
    first = await pulls.start(ADMIN, backend="ollama", model="llama3.2:3b")
    with pytest.raises(Conflict):
        await pulls.start(ADMIN, backend="ollama", model="llama3.2:3b")
    assert first.task is not None
    await first.task
    assert first.status == "succeeded"
