"""The balancer with a real OpenAI-compatible server and a dead node (a closed loopback port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from appliance.errors import BackendBusy, BackendUnavailable
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.openai_compat import OpenAICompatBackend
from tests.integration.inference.conftest import SMALL
from tests.support.llama_server import LlamaServer

REQUEST = GenerationRequest(model=SMALL, messages=[Message("user", "Say hi.")], max_tokens=4)


def node(url: str, name: str, *, threshold: int = 2, limit: int = 2, replicas: int = 1) -> Node:
    return Node(
        name,
        OpenAICompatBackend(base_url=url, name=name, connect_timeout_s=0.5),
        max_concurrency=limit,
        breaker=CircuitBreaker(failure_threshold=threshold, reset_after_s=60),
        replicas=replicas,
    )


@pytest.fixture
async def make_pool() -> AsyncIterator[object]:
    made: list[BalancedBackend] = []

    def build(*nodes: Node) -> BalancedBackend:
        balanced = BalancedBackend(
            "pool", list(nodes), first_token_timeout_s=30, total_timeout_s=60
        )
        made.append(balanced)
        return balanced

    yield build
    for balanced in made:
        await balanced.aclose()


async def test_dead_first_node_falls_through_to_the_live_one_then_opens(
    llama_server: LlamaServer, dead_url: str, make_pool: object
) -> None:
    balanced = make_pool(node(dead_url, "dead"), node(llama_server.base_url, "live"))  # type: ignore[operator]

    first = await balanced.generate(REQUEST)
    assert first.node == "live"
    assert balanced.nodes[0].breaker.failures == 1
    assert balanced.nodes[0].breaker.state == "closed"

    second = await balanced.generate(REQUEST)
    assert second.node == "live"
    assert balanced.nodes[0].breaker.state == "open"

    # With its breaker open the dead node is not even tried.
    third = await balanced.generate(REQUEST)
    assert third.node == "live"
    assert balanced.nodes[0].breaker.failures == 2
    assert balanced.nodes[1].served == 3
    assert balanced.nodes[0].served == 0


async def test_streams_also_fall_through_before_the_first_token(
    llama_server: LlamaServer, dead_url: str, make_pool: object
) -> None:
    balanced = make_pool(node(dead_url, "dead"), node(llama_server.base_url, "live"))  # type: ignore[operator]
    deltas = [d async for d in balanced.stream(REQUEST)]
    assert "".join(d.content for d in deltas).strip()
    assert deltas[-1].node == "live"
    assert balanced.nodes[0].breaker.failures == 1


async def test_all_nodes_down_is_backend_unavailable_naming_them(
    dead_url: str, make_pool: object
) -> None:
    balanced = make_pool(node(dead_url, "a"), node(dead_url, "b"))  # type: ignore[operator]
    with pytest.raises(BackendUnavailable) as info:
        await balanced.generate(REQUEST)
    assert "a: backend_unavailable" in info.value.message
    assert "b: backend_unavailable" in info.value.message


async def test_least_outstanding_sends_the_next_request_to_the_idle_node(
    llama_server: LlamaServer, make_pool: object
) -> None:
    balanced = make_pool(  # type: ignore[operator]
        node(llama_server.base_url, "one"), node(llama_server.base_url, "two")
    )
    held = balanced.stream(GenerationRequest(model=SMALL, messages=REQUEST.messages, max_tokens=6))
    first = await anext(held)  # "one" now has a request in flight
    assert first.content
    assert [n.outstanding for n in balanced.nodes] == [1, 0]
    result = await balanced.generate(REQUEST)
    assert result.node == "two"
    await held.aclose()
    assert [n.outstanding for n in balanced.nodes] == [0, 0]


async def test_health_probe_opens_a_dead_node_and_keeps_the_live_one(
    llama_server: LlamaServer, dead_url: str, make_pool: object
) -> None:
    balanced = make_pool(  # type: ignore[operator]
        node(dead_url, "dead", threshold=1), node(llama_server.base_url, "live")
    )
    states = await balanced.probe()
    assert states == {"dead": "open", "live": "closed"}
    health = await balanced.health()
    assert health.ok
    assert "dead=down/open" in health.detail
    assert "live=closed" in health.detail


async def test_first_token_timeout_moves_on_and_counts_as_a_failure(
    llama_server: LlamaServer, make_pool: object
) -> None:
    slow = node(llama_server.base_url, "slow")
    balanced = BalancedBackend("pool", [slow], first_token_timeout_s=0.001, total_timeout_s=60)
    try:
        with pytest.raises(BackendUnavailable) as info:
            async for _ in balanced.stream(REQUEST):
                pass
        assert "slow: first-token timeout" in info.value.message
        assert slow.breaker.failures == 1
        assert slow.outstanding == 0
    finally:
        await balanced.aclose()


async def test_total_timeout_moves_on(llama_server: LlamaServer, make_pool: object) -> None:
    slow = node(llama_server.base_url, "slow")
    balanced = BalancedBackend("pool", [slow], first_token_timeout_s=30, total_timeout_s=0.001)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await balanced.generate(REQUEST)
        assert "slow: total timeout" in info.value.message
    finally:
        await balanced.aclose()


async def test_idle_nodes_take_turns(llama_server: LlamaServer, make_pool: object) -> None:
    # One request at a time leaves every count at zero: without turns, the first node would
    # get them all, and so would it from every replica.
    balanced = make_pool(  # type: ignore[operator]
        node(llama_server.base_url, "one"), node(llama_server.base_url, "two")
    )
    served = [(await balanced.generate(REQUEST)).node for _ in range(4)]
    assert served == ["one", "two", "one", "two"]


async def wait_for_waiters(balanced: BalancedBackend, count: int) -> None:
    for _ in range(500):
        if balanced.waiting == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{balanced.waiting} requests waiting, expected {count}")


async def test_a_replicas_share_is_enforced_and_the_next_request_waits_for_any_free_slot(
    llama_server: LlamaServer,
) -> None:
    # Capacity 2 shared by 2 replicas: this one may hold 1 request on each node.
    one = node(llama_server.base_url, "one", limit=2, replicas=2)
    two = node(llama_server.base_url, "two", limit=2, replicas=2)
    balanced = BalancedBackend("pool", [one, two], first_token_timeout_s=30, total_timeout_s=60)
    long = GenerationRequest(model=SMALL, messages=REQUEST.messages, max_tokens=6)
    try:
        held_one, held_two = balanced.stream(long), balanced.stream(long)
        await anext(held_one)
        await anext(held_two)
        assert [(n.outstanding, n.full) for n in balanced.nodes] == [(1, True), (1, True)]

        queued = asyncio.create_task(balanced.generate(REQUEST))
        await wait_for_waiters(balanced, 1)
        assert not queued.done()
        await held_two.aclose()  # frees "two": the waiter takes it
        result = await asyncio.wait_for(queued, 60)
        assert result.node == "two"
        assert balanced.waiting == 0
        await held_one.aclose()
        assert [n.outstanding for n in balanced.nodes] == [0, 0]
    finally:
        await balanced.aclose()


async def test_a_full_queue_and_a_long_wait_are_backend_busy(llama_server: LlamaServer) -> None:
    only = node(llama_server.base_url, "only", limit=1)
    balanced = BalancedBackend(
        "pool",
        [only],
        first_token_timeout_s=30,
        total_timeout_s=60,
        queue_size=1,
        queue_timeout_s=0.3,
        retry_after_s=7,
    )
    try:
        held = balanced.stream(
            GenerationRequest(model=SMALL, messages=REQUEST.messages, max_tokens=6)
        )
        await anext(held)
        # One may wait, and gives up after queue_timeout_s ...
        waiting = asyncio.create_task(balanced.generate(REQUEST))
        await wait_for_waiters(balanced, 1)
        # ... while a second finds the queue full at once.
        with pytest.raises(BackendBusy) as full:
            await balanced.generate(REQUEST)
        assert full.value.retry_after == 7
        assert "1 requests are waiting" in full.value.message
        with pytest.raises(BackendBusy):
            await waiting
        assert balanced.waiting == 0
        # Waiting is not failing: the node's breaker never counted either.
        assert only.breaker.failures == 0
        await held.aclose()
        assert (await balanced.generate(REQUEST)).node == "only"
    finally:
        await balanced.aclose()
