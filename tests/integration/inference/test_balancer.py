"""The balancer with a real OpenAI-compatible server and a dead node (a closed loopback port)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from appliance.errors import BackendUnavailable
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.openai_compat import OpenAICompatBackend
from tests.integration.inference.conftest import SMALL
from tests.support.llama_server import LlamaServer

REQUEST = GenerationRequest(model=SMALL, messages=[Message("user", "Say hi.")], max_tokens=4)


def node(url: str, name: str, *, threshold: int = 2, limit: int = 2) -> Node:
    return Node(
        name,
        OpenAICompatBackend(base_url=url, name=name, connect_timeout_s=0.5),
        max_concurrency=limit,
        breaker=CircuitBreaker(failure_threshold=threshold, reset_after_s=60),
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
