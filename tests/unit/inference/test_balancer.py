"""The circuit breaker's state machine and the balancer's node order (no network)."""

from __future__ import annotations

import pytest

from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.openai_compat import OpenAICompatBackend


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
