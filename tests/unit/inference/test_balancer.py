"""The circuit breaker's state machine, the balancer's node order and its answers to busy nodes.

No network: Ollama nodes are FakeOllamaTransport (Ollama's documented wire format replayed, since
the Ollama binary cannot run here).
"""

from __future__ import annotations

import asyncio

import pytest

from appliance.errors import BackendBusy, InvalidInput
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.ollama import OllamaBackend
from appliance.inference.openai_compat import OpenAICompatBackend
from tests.support.fake_ollama import FakeOllamaTransport

# Ollama's answer when OLLAMA_MAX_QUEUE requests already wait (server/sched.go ErrMaxQueue).
OLLAMA_BUSY = (503, "server busy, please try again.  maximum pending requests exceeded")
REQUEST = GenerationRequest(
    model="llama3.2:3b", messages=[Message("user", "Say hello.")], max_tokens=4
)


class Clock:
    """A hand-wound clock for the breaker."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_after_s=10, clock=clock)


def test_opens_after_n_consecutive_failures_only() -> None:
    clock = Clock()
    b = breaker(clock)
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open"
    assert not b.allow()


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    b = breaker(clock, threshold=1)
    b.failure()
    clock.now += 9.9
    assert b.state == "open"
    clock.now += 0.2
    assert b.state == "half_open"
    assert b.allow()
    assert not b.allow()  # only one probe at a time
    b.success()
    assert b.state == "closed"
    assert b.allow()


def test_failed_probe_reopens_for_a_full_period() -> None:
    clock = Clock()
    b = breaker(clock, threshold=2)
    b.failure()
    b.failure()
    clock.now += 10
    assert b.allow()
    b.failure()
    assert b.state == "open"
    clock.now += 5
    assert b.state == "open"


def pool(*outstanding: int, limit: int = 2) -> BalancedBackend:
    nodes = []
    for index, count in enumerate(outstanding):
        backend = OpenAICompatBackend(base_url=f"http://127.0.0.1:9/n{index}/v1")
        node = Node(
            f"n{index}",
            backend,
            max_concurrency=limit,
            breaker=CircuitBreaker(failure_threshold=1, reset_after_s=60),
        )
        node.outstanding = count
        nodes.append(node)
    return BalancedBackend("pool", nodes, first_token_timeout_s=1, total_timeout_s=5)


def test_least_outstanding_first_and_full_nodes_last() -> None:
    balanced = pool(1, 0, 2, limit=2)
    assert [n.name for n in balanced.candidates()] == ["n1", "n0", "n2"]


def test_open_breakers_are_skipped() -> None:
    balanced = pool(0, 0)
    balanced.nodes[0].breaker.failure()
    assert [n.name for n in balanced.candidates()] == ["n1"]


def test_a_pool_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        BalancedBackend("empty", [], first_token_timeout_s=1, total_timeout_s=1)


@pytest.mark.parametrize(
    ("capacity", "replicas", "share"), [(4, 1, 4), (4, 3, 2), (1, 3, 1), (8, 2, 4), (9, 4, 3)]
)
def test_each_replica_admits_its_share_of_a_nodes_slots(
    capacity: int, replicas: int, share: int
) -> None:
    node = Node(
        "n",
        OpenAICompatBackend(base_url="http://127.0.0.1:9/v1"),
        max_concurrency=capacity,
        breaker=CircuitBreaker(failure_threshold=1, reset_after_s=60),
        replicas=replicas,
    )
    assert node.limit == share
    node.outstanding = share - 1
    assert not node.full
    node.outstanding = share
    assert node.full


def ollama_pool(*fakes: FakeOllamaTransport, threshold: int = 1) -> BalancedBackend:
    nodes = [
        Node(
            f"o{index}",
            OllamaBackend(host=f"http://127.0.0.1:{11434 + index}", transport=fake.transport()),
            max_concurrency=2,
            breaker=CircuitBreaker(failure_threshold=threshold, reset_after_s=60),
        )
        for index, fake in enumerate(fakes)
    ]
    return BalancedBackend("box", nodes, first_token_timeout_s=5, total_timeout_s=5)


def chats(fake: FakeOllamaTransport) -> int:
    return sum(1 for path, _ in fake.requests if path == "/api/chat")


async def test_a_busy_node_passes_the_request_on_without_opening_its_breaker() -> None:
    busy, free = FakeOllamaTransport(errors={"/api/chat": OLLAMA_BUSY}), FakeOllamaTransport()
    pool = ollama_pool(busy, free)

    first = await pool.generate(REQUEST)
    assert first.node == "o1"
    assert chats(busy) == 1
    # Threshold 1: one failure would have opened it; a busy answer is not a failure.
    assert pool.nodes[0].breaker.state == "closed"
    assert pool.nodes[0].breaker.failures == 0

    # For a moment the busy node ranks after the free one, even with fewer requests in flight.
    for _ in range(2):
        assert (await pool.generate(REQUEST)).node == "o1"
    assert chats(busy) == 1
    assert [n.served for n in pool.nodes] == [0, 3]


async def test_every_node_busy_is_503_backend_busy_with_retry_after_not_a_tier_fallback() -> None:
    pool = ollama_pool(
        FakeOllamaTransport(errors={"/api/chat": OLLAMA_BUSY}),
        FakeOllamaTransport(errors={"/api/chat": OLLAMA_BUSY}),
    )
    with pytest.raises(BackendBusy) as info:
        await pool.generate(REQUEST)
    assert info.value.status_code == 503
    assert info.value.retry_after >= 1
    assert "o0: backend_busy" in info.value.message and "o1: backend_busy" in info.value.message
    assert [n.breaker.state for n in pool.nodes] == ["closed", "closed"]

    # Streams too: no first token anywhere, the caller is told to retry.
    with pytest.raises(BackendBusy):
        async for _ in pool.stream(REQUEST):
            pass


async def test_a_half_open_probe_refused_as_bad_input_lets_the_next_probe_through() -> None:
    bad = FakeOllamaTransport(errors={"/api/chat": (400, "invalid options")})
    pool = ollama_pool(bad)
    breaker = pool.nodes[0].breaker
    breaker.reset_after_s = 0.0  # half-open at once
    breaker.failure()
    assert breaker.state == "half_open"

    with pytest.raises(InvalidInput):
        await pool.generate(REQUEST)
    # The node answered, so the probe is over: without that, no request would reach it again.
    with pytest.raises(InvalidInput):
        await pool.generate(REQUEST)
    assert chats(bad) == 2
    assert pool.nodes[0].outstanding == 0


class CrossingClock:
    """A clock that passes a breaker's reset time after `reads` more readings: wherever in a
    claim that happens, the claim must still know whether it is the half-open probe."""

    def __init__(self, before: float, after: float) -> None:
        self.before, self.after = before, after
        self.left: int | None = None

    def cross_after(self, reads: int) -> None:
        self.left = reads

    def __call__(self) -> float:
        if self.left is None:
            return self.before
        if self.left > 0:
            self.left -= 1
            return self.before
        return self.after


@pytest.mark.parametrize("reads", range(8))
async def test_concurrent_claims_send_exactly_one_probe_to_a_half_open_node(reads: int) -> None:
    clock = CrossingClock(before=105.0, after=110.0)
    nodes = [
        Node(
            name,
            OpenAICompatBackend(base_url=f"http://127.0.0.1:9/{name}/v1"),
            max_concurrency=8,
            breaker=CircuitBreaker(failure_threshold=1, reset_after_s=10, clock=clock),
        )
        for name in ("broken", "spare")
    ]
    nodes[0].breaker._opened_at = 100.0  # failed at 100: half-open from 110
    nodes[0].breaker.failures = 1
    pool = BalancedBackend("pool", nodes, first_token_timeout_s=1, total_timeout_s=5)
    clock.cross_after(reads)
    hold = asyncio.Event()
    claims: list[tuple[str, bool]] = []

    async def request() -> None:
        claim = await pool._claim(set(), "m")
        assert claim is not None
        node, probe = claim
        claims.append((node.name, probe))
        await hold.wait()  # every claim holds its slot while the others are made
        pool._release(node, probe)

    tasks = [asyncio.create_task(request()) for _ in range(8)]
    for _ in range(100):
        if len(claims) == 8 or any(task.done() for task in tasks):
            break
        await asyncio.sleep(0)
    assert len(claims) == 8, [task.exception() for task in tasks if task.done()]
    assert [c for c in claims if c[0] == "broken"] == [("broken", True)]
    assert all(not probe for name, probe in claims if name == "spare")
    hold.set()
    await asyncio.gather(*tasks)

    # The probe ended without a verdict (released): the next request probes the node again.
    assert nodes[0].breaker.state == "half_open"
    again = await pool._claim({"spare"}, "m")
    assert again is not None and again[0].name == "broken" and again[1] is True
