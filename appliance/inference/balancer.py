"""Several nodes behind one model: least-outstanding-requests, breakers, limits, timeouts.

A `BalancedBackend` is itself a `Backend`, so the registry and the gateway never know whether a
model has one node or ten. A node that refuses connections costs a request only the connect
attempt (the client's connect timeout bounds it); the request moves on to the next node, and
after `failure_threshold` consecutive failures the node's breaker opens so later requests skip it
until a half-open probe succeeds. Once a stream has produced its first token it stays on its node:
restarting elsewhere would repeat text the caller has already seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Literal

import anyio

from appliance.errors import BackendBusy, BackendTimeout, BackendUnavailable
from appliance.inference.base import (
    Backend,
    Capabilities,
    Delta,
    Generation,
    GenerationRequest,
    Health,
    ModelInfo,
)

BreakerState = Literal["closed", "open", "half_open"]

# Failures that say "this node cannot serve now", so another node may. Anything else (bad input,
# unknown model) would fail on every node alike and goes straight back to the caller.
_NODE_FAILURES = (BackendUnavailable, BackendTimeout, BackendBusy)


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; half-opens after `reset_after_s`."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """closed (serving), open (skipped), or half_open (one probe request allowed)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_after_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a request may go to the node now; in half-open, only one at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        """A request succeeded: close."""
        self.failures, self._opened_at, self._probing = 0, None, False

    def failure(self) -> None:
        """A request failed: count it; open (or re-open after a failed probe) at the threshold."""
        self.failures += 1
        self._probing = False
        if self._opened_at is not None or self.failures >= self.failure_threshold:
            self._opened_at = self._clock()


class Node:
    """One server of a pool: its backend, a concurrency limit, in-flight count and breaker."""

    def __init__(
        self, name: str, backend: Backend, *, max_concurrency: int, breaker: CircuitBreaker
    ):
        self.name = name
        self.backend = backend
        self.max_concurrency = max_concurrency
        self.breaker = breaker
        self.outstanding = 0
        self.served = 0
        self._limit = asyncio.Semaphore(max_concurrency)

    @property
    def full(self) -> bool:
        """Whether every concurrency slot is taken."""
        return self.outstanding >= self.max_concurrency


class BalancedBackend:
    """A pool of nodes serving the same models, chosen by least outstanding requests."""

    def __init__(
        self,
        name: str,
        nodes: list[Node],
        *,
        first_token_timeout_s: float,
        total_timeout_s: float,
        cost_per_hour: float | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a balanced backend needs at least one node")
        self.name = name
        self.nodes = nodes
        # What the pool's node time costs; models discovered on it (not declared) take it.
        self.cost_per_hour = cost_per_hour
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self.capabilities: Capabilities = nodes[0].backend.capabilities
        self.last_probe: dict[str, bool] = {}

    async def aclose(self) -> None:
        """Close every node's client."""
        for node in self.nodes:
            close = getattr(node.backend, "aclose", None)
            if close is not None:
                await close()

    def models(self) -> list[ModelInfo]:
        """The models of the first node that lists any (nodes of a pool serve the same ones)."""
        for node in self.nodes:
            found = node.backend.models()
            if found:
                return [replace(m, backend=self.name) for m in found]
        return []

    def candidates(self) -> Iterator[Node]:
        """Nodes to try, in order: least outstanding first, full nodes after free ones.

        Lazy, so a half-open node is only claimed for its probe when the request reaches it.
        """
        ranked = sorted(enumerate(self.nodes), key=lambda p: (p[1].full, p[1].outstanding, p[0]))
        for _, node in ranked:
            if node.breaker.allow():
                yield node

    def _exhausted(self, failures: list[str]) -> BackendUnavailable:
        detail = "; ".join(failures) or "every node's circuit breaker is open"
        return BackendUnavailable(f"no node of '{self.name}' could serve ({detail})")

    async def generate(self, request: GenerationRequest) -> Generation:
        """Try nodes in order until one answers within the total timeout."""
        failures: list[str] = []
        for node in self.candidates():
            node.outstanding += 1
            try:
                async with node._limit:
                    with anyio.fail_after(self.total_timeout_s):
                        result = await node.backend.generate(request)
            except TimeoutError:
                node.breaker.failure()
                failures.append(f"{node.name}: total timeout")
                continue
            except _NODE_FAILURES as exc:
                node.breaker.failure()
                failures.append(f"{node.name}: {exc.code}")
                continue
            finally:
                node.outstanding -= 1
            node.breaker.success()
            node.served += 1
            return replace(result, node=node.name)
        raise self._exhausted(failures)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Find a node that produces a first token in time, then stay on it."""
        failures: list[str] = []
        for node in self.candidates():
            node.outstanding += 1
            try:
                async with node._limit:
                    deltas = node.backend.stream(request)
                    try:
                        with anyio.fail_after(self.first_token_timeout_s):
                            first = await anext(deltas)
                    except TimeoutError:
                        node.breaker.failure()
                        failures.append(f"{node.name}: first-token timeout")
                        await _aclose(deltas)
                        continue
                    except _NODE_FAILURES as exc:
                        node.breaker.failure()
                        failures.append(f"{node.name}: {exc.code}")
                        await _aclose(deltas)
                        continue
                    except StopAsyncIteration:
                        first = Delta(content="", finish_reason="stop")
                    node.breaker.success()
                    node.served += 1
                    deadline = time.monotonic() + self.total_timeout_s
                    delta: Delta | None = first
                    try:
                        while delta is not None:
                            if delta.usage is not None:
                                delta = replace(delta, node=node.name)
                            yield delta
                            if time.monotonic() > deadline:
                                raise BackendTimeout(f"node {node.name} exceeded the total timeout")
                            delta = await anext(deltas, None)
                    finally:
                        await _aclose(deltas)
                    return
            finally:
                node.outstanding -= 1
        raise self._exhausted(failures)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings from the first node that answers (nodes without `embed` are skipped)."""
        failures: list[str] = []
        for node in self.candidates():
            embed = getattr(node.backend, "embed", None)
            if embed is None:
                continue
            node.outstanding += 1
            try:
                async with node._limit:
                    with anyio.fail_after(self.total_timeout_s):
                        vectors: list[list[float]] = await embed(model, texts)
            except TimeoutError:
                node.breaker.failure()
                failures.append(f"{node.name}: total timeout")
                continue
            except _NODE_FAILURES as exc:
                node.breaker.failure()
                failures.append(f"{node.name}: {exc.code}")
                continue
            finally:
                node.outstanding -= 1
            node.breaker.success()
            node.served += 1
            return vectors
        raise self._exhausted(failures)

    async def probe(self) -> dict[str, BreakerState]:
        """Health-probe every node; a healthy one closes its breaker, a failing one counts."""
        self.last_probe = {}
        for node in self.nodes:
            try:
                with anyio.fail_after(self.first_token_timeout_s):
                    health = await node.backend.health()
            except TimeoutError:
                health = Health(ok=False, detail="probe timed out")
            self.last_probe[node.name] = health.ok
            if health.ok:
                node.breaker.success()
            else:
                node.breaker.failure()
        return {node.name: node.breaker.state for node in self.nodes}

    async def health(self) -> Health:
        """Healthy when any node answered its probe; the detail names each node's state."""
        states = await self.probe()
        ok = any(self.last_probe.values())
        return Health(
            ok=ok,
            detail=", ".join(
                f"{n}={s if self.last_probe[n] else 'down/' + s}" for n, s in states.items()
            ),
        )


async def _aclose(stream: AsyncIterator[Delta]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()
