"""`appliance.metrics`: the state read at scrape time (breakers, node health, queues, the
detector, the database) and the labels it writes, through the real exposition and its parser.

The pool is a real `BalancedBackend` of OpenAI-compatible nodes on a port nothing listens on
(each request is refused at connect), the queues are the real gates of an embedded engine whose
workers are never started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from appliance.audit.events import EVENTS
from appliance.errors import ApplianceError, BackendBusy, BackendUnavailable
from appliance.http.audit import _CODES
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.openai_compat import OpenAICompatBackend
from appliance.metrics import (
    METHODS,
    OUTCOMES,
    Metrics,
    StateSources,
    node_label,
    outcome_label,
    policy_label,
    request_done,
)

REFUSING = "http://127.0.0.1:9"
"""The discard port: nothing listens there, so a connection is refused at once."""


class Clock:
    """A hand-wound clock for the breakers."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sources(
    backends: Iterable[object] = (),
    *,
    detector: str = "ready",
    head: Callable[[], int] = lambda: 7,
    work: Mapping[tuple[str, str], int] | None = None,
) -> StateSources:
    return StateSources(
        backends=lambda: list(backends),
        detector_status=lambda: detector,
        integrity_status=lambda: "ok",
        chain_head=head,
        work_progress=lambda: dict(work or {}),
    )


def scrape(metrics: Metrics) -> list[Sample]:
    text = metrics.render().decode("utf-8")
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def pool(clock: Clock, *urls: str) -> BalancedBackend:
    nodes = [
        Node(
            url,
            OpenAICompatBackend(base_url=f"{url}/v1", name=f"gpu-{index}", connect_timeout_s=1),
            max_concurrency=3,
            breaker=CircuitBreaker(failure_threshold=1, reset_after_s=10, clock=clock),
        )
        for index, url in enumerate(urls)
    ]
    return BalancedBackend("gpu", nodes, first_token_timeout_s=5, total_timeout_s=5)


async def test_breaker_state_and_node_health_are_read_when_scraped() -> None:
    clock = Clock()
    backend = pool(clock, REFUSING, "http://prom:s3cret@127.0.0.1:9/b")
    metrics = Metrics(sources([backend]))
    first, second = REFUSING, "http://127.0.0.1:9/b"  # the second without its password

    samples = scrape(metrics)
    for node in (first, second):
        assert (
            value(samples, "appliance_backend_node_breaker_state", node=node, state="closed") == 1
        )
        assert value(samples, "appliance_backend_node_breaker_state", node=node, state="open") == 0
        assert value(samples, "appliance_backend_node_up", backend="gpu", node=node) == 1
        assert value(samples, "appliance_backend_node_max_concurrency", node=node) == 3
    assert not any("s3cret" in v for s in samples for v in s.labels.values())

    request = GenerationRequest(
        model="m", messages=[Message(role="user", content="hi")], max_tokens=1
    )
    with pytest.raises(BackendUnavailable):
        await backend.generate(request)  # both nodes refuse: both breakers open
    samples = scrape(metrics)
    for node in (first, second):
        assert value(samples, "appliance_backend_node_breaker_state", node=node, state="open") == 1
        assert (
            value(samples, "appliance_backend_node_breaker_state", node=node, state="closed") == 0
        )
        assert value(samples, "appliance_backend_node_up", node=node) == 0
        assert value(samples, "appliance_backend_node_consecutive_failures", node=node) == 1
        assert value(samples, "appliance_backend_node_outstanding", node=node) == 0

    clock.now += 10
    samples = scrape(metrics)
    assert (
        value(samples, "appliance_backend_node_breaker_state", node=first, state="half_open") == 1
    )

    # A health probe's answer is what `up` says from then on.
    await backend.probe()
    assert value(scrape(metrics), "appliance_backend_node_up", node=first) == 0
    await backend.aclose()


async def test_queue_depth_per_model_and_lane_and_the_wait_of_each_admission() -> None:
    engine = LlamaCppBackend(
        [LocalModel("tiny-a", Path("tiny-a.gguf")), LocalModel("tiny-b", Path("tiny-b.gguf"))],
        threads=1,
        context=256,
        queue_size=2,
        retry_after=1,
        timeout_s=5,
    )
    metrics = Metrics(sources([engine]))
    gate = engine.gate("tiny-a")
    # The instruments belong to the process: compare with what they held before.
    waited_before = _wait(metrics, "sum"), _wait(metrics, "count")
    rejected_before = _rejected(metrics)
    release = asyncio.Event()

    async def generate() -> None:
        async with gate.slot():
            await release.wait()

    tasks = [asyncio.create_task(generate()) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    samples = scrape(metrics)
    assert value(samples, "appliance_queue_depth", model="tiny-a", lane="interactive") == 2
    assert value(samples, "appliance_queue_active", model="tiny-a", lane="interactive") == 1
    assert value(samples, "appliance_queue_depth", model="tiny-a", lane="background") == 0
    assert value(samples, "appliance_queue_active", model="tiny-b", lane="interactive") == 0
    assert value(samples, "appliance_queue_depth", model="tiny-b", lane="embedding") == 0
    # The engine's workers were never started: each model's worker says so.
    assert value(samples, "appliance_model_worker_state", model="tiny-a", state="starting") == 1
    assert value(samples, "appliance_model_worker_state", model="tiny-a", state="ready") == 0

    with pytest.raises(BackendBusy):
        async with gate.slot():
            pass  # pragma: no cover - refused before entering
    assert _rejected(metrics) == rejected_before + 1

    await asyncio.sleep(0.01)  # the two in line have waited a measurable time
    release.set()
    await asyncio.gather(*tasks)
    samples = scrape(metrics)
    assert value(samples, "appliance_queue_depth", model="tiny-a", lane="interactive") == 0
    assert value(samples, "appliance_queue_active", model="tiny-a", lane="interactive") == 0
    assert _wait(metrics, "count") == waited_before[1] + 3  # every admission, 0 s waits too
    assert _wait(metrics, "sum") > waited_before[0]


def _wait(metrics: Metrics, part: str) -> float:
    name = f"appliance_queue_wait_seconds_{part}"
    return value(scrape(metrics), name, model="tiny-a", priority="interactive") or 0.0


def _rejected(metrics: Metrics, model: str = "tiny-a") -> float:
    return value(scrape(metrics), "appliance_queue_rejected_total", model=model) or 0.0


def test_detector_audit_and_background_work() -> None:
    work = {("batch_jobs", "running"): 1, ("batch_items", "pending"): 4, ("eval_runs", "done"): 2}
    samples = scrape(Metrics(sources(detector="loading", work=work)))
    assert value(samples, "appliance_detector_ready") == 0
    assert value(samples, "appliance_detector_state", state="loading") == 1
    assert value(samples, "appliance_audit_chain_head_seq") == 7
    assert value(samples, "appliance_audit_integrity_ok") == 1
    assert value(samples, "appliance_database_up") == 1
    assert value(samples, "appliance_batch_jobs", status="running") == 1
    assert value(samples, "appliance_batch_items", status="pending") == 4
    assert value(samples, "appliance_eval_runs", status="done") == 2

    failed = scrape(Metrics(sources(detector="failed: no such pipeline")))
    assert value(failed, "appliance_detector_state", state="failed") == 1


def test_a_failed_database_read_leaves_its_families_out_and_the_rest_in() -> None:
    def down() -> int:
        raise ConnectionError("database unreachable")

    samples = scrape(Metrics(sources(head=down)))
    assert value(samples, "appliance_database_up") == 0
    assert value(samples, "appliance_audit_chain_head_seq") is None
    assert value(samples, "appliance_detector_ready") == 1


def test_policy_labels_drop_the_version() -> None:
    assert policy_label("legal@3") == "legal"
    assert policy_label(None) == "none"
    assert len(policy_label("p" * 500)) == 100


HOSTILE_ROUTE = "/test/hostile-labels"


def test_hostile_methods_and_outcomes_give_only_the_fixed_labels() -> None:
    methods = ["GET", "get", "BREW", "PROPFIND", "GET\nX-Evil: 1", "M" * 500, ""]
    outcomes = [
        *("allowed", "ended 3", "ended 41", "staff->admin", "admin->auditor"),
        *("canaryid4242", "x" * 300, "ok; drop table", "password", None, ""),
    ]
    for method in methods:
        for outcome in outcomes:
            request_done(
                route=HOSTILE_ROUTE,
                method=method,
                status=200,
                seconds=0.001,
                outcome=outcome,
                policy=None,
            )
    samples = [
        s
        for s in scrape(Metrics(sources()))
        if s.name == "appliance_http_requests_total" and s.labels["route"] == HOSTILE_ROUTE
    ]
    assert {s.labels["method"] for s in samples} == {"GET", "OTHER"}
    assert {s.labels["outcome"] for s in samples} == {
        *("allowed", "ended", "changed", "other", "password", "none"),
    }
    assert sum(s.value for s in samples) == len(methods) * len(outcomes)


def test_every_outcome_the_appliance_writes_by_default_is_a_label_of_its_own() -> None:
    """The vocabulary holds every typed event's default outcome, every error code and the HTTP
    layer's refusals, so none of them is counted as `other`."""
    codes: set[str] = set()
    pending: list[type[ApplianceError]] = [ApplianceError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    defaults = {e.default_outcome for e in EVENTS.values()}
    written = codes | defaults | set(_CODES.values())
    assert {o for o in written if outcome_label(o) != o} == set()
    assert "other" not in OUTCOMES and "OTHER" not in METHODS


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("https://prom:s3cret@gpu-1.lan:8443/v1?api_key=s3cret#frag", "https://gpu-1.lan:8443/v1"),
        ("http://127.0.0.1:9/b?token=s3cret", "http://127.0.0.1:9/b"),
        ("http://user@[::1]:8000", "http://[::1]:8000"),
        ("http://gpu-2:notaport/v1", "http://gpu-2/v1"),
        ("gpu-3", "gpu-3"),
        # No scheme, as Ollama's client accepts: still host and port, never the password.
        ("10.0.0.21:11434", "10.0.0.21:11434"),
        ("10.0.0.22:11434", "10.0.0.22:11434"),
        ("u:p4ss@gpu-4:11434", "gpu-4:11434"),
        ("u:p4ss@gpu-4:11434/v1//x", "gpu-4:11434/v1//x"),
    ],
)
def test_a_node_label_is_scheme_host_port_and_path_only(name: str, label: str) -> None:
    assert node_label(name) == label


def test_a_pools_node_labels_hold_no_credentials_or_query() -> None:
    clock = Clock()
    backend = pool(clock, "http://prom:s3cret@127.0.0.1:9/a?key=s3cret", "http://127.0.0.1:9/b#x")
    samples = scrape(Metrics(sources([backend])))
    nodes = {s.labels["node"] for s in samples if s.name == "appliance_backend_node_up"}
    assert nodes == {"http://127.0.0.1:9/a", "http://127.0.0.1:9/b"}


async def test_a_pools_queue_full_refusal_is_counted_for_its_model() -> None:
    """A node that accepts connections and never answers holds the pool's one slot; one
    request waits in the pool's queue (size 1) and the next is refused at once; the waiter is
    refused when its `queue_timeout_s` runs out. Both 503s count for the model."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # reads the request, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    node = Node(
        f"http://127.0.0.1:{port}",
        OpenAICompatBackend(base_url=f"http://127.0.0.1:{port}/v1", name="gpu-0"),
        max_concurrency=1,
        breaker=CircuitBreaker(failure_threshold=1, reset_after_s=10),
    )
    backend = BalancedBackend(
        "gpu",
        [node],
        first_token_timeout_s=30,
        total_timeout_s=30,
        queue_size=1,
        queue_timeout_s=0.3,
    )
    metrics = Metrics(sources([backend]))
    model = "pool-queue-model"
    before = _rejected(metrics, model)
    request = GenerationRequest(
        model=model, messages=[Message(role="user", content="hi")], max_tokens=1
    )
    holding = asyncio.create_task(backend.generate(request))
    await asyncio.sleep(0)  # it claims the slot before its first await (the connect)
    assert node.outstanding == 1
    waiting = asyncio.create_task(backend.generate(request))
    await asyncio.sleep(0)
    assert backend.waiting == 1

    with pytest.raises(BackendBusy, match="requests are waiting"):
        await backend.generate(request)
    assert _rejected(metrics, model) == before + 1
    with pytest.raises(BackendBusy):
        await waiting
    assert _rejected(metrics, model) == before + 2
    assert node.breaker.state == "closed"  # a full queue is no failure of the node

    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()
    await backend.aclose()
