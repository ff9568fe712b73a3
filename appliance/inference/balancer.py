"""Several nodes behind one model: least-outstanding-requests, per-node limits, breakers, timeouts.

A `BalancedBackend` is itself a `Backend`, so the registry and the gateway never know whether a
model has one node or ten. A node that refuses connections costs a request only the connect
attempt (the client's connect timeout bounds it); the request moves on to the next node, and
after `failure_threshold` consecutive failures the node's breaker opens so later requests skip it
until a half-open probe succeeds. Once a stream has produced its first token it stays on its node:
restarting elsewhere would repeat text the caller has already seen.

Several app replicas share the same nodes, and each knows only its own requests. What keeps
them from crowding one node: each replica admits at most its share of a node's slots
(`Node.limit`); ties between equally loaded nodes rotate, so idle replicas do not all pick the
first node; and a node that answers busy (HTTP 429, Ollama's 503 "server busy") sends the
request on to the next node without counting against its breaker. A request that finds every
node at this replica's share waits in the pool's queue for the first slot to free on any node.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Literal, TypeVar

import anyio

from appliance.errors import BackendBusy, BackendTimeout, BackendUnavailable, InferenceError
from appliance.inference.base import (
    Backend,
    Capabilities,
    Delta,
    Generation,
    GenerationRequest,
    Health,
    ModelInfo,
)
from appliance.metrics import queue_rejected

BreakerState = Literal["closed", "open", "half_open"]
Admission = Literal["request", "probe"]
T = TypeVar("T")

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

    def admit(self) -> Admission | None:
        """Let a request through now, and say whether it is the half-open probe (which must be
        ended by `success`, `failure` or `abandon`); None when the breaker refuses it.

        The state is read once, here: read apart from the admission, the clock can pass the
        reset time in between, and a request admitted as the probe would not know it is one.
        """
        state = self.state
        if state == "closed":
            return "request"
        if state == "half_open" and not self._probing:
            self._probing = True
            return "probe"
        return None

    def allow(self) -> bool:
        """Whether a request may go to the node now; in half-open, only one at a time."""
        return self.admit() is not None

    def success(self) -> None:
        """A request succeeded: close."""
        self.failures, self._opened_at, self._probing = 0, None, False

    def abandon(self) -> None:
        """The half-open probe ended without a verdict (cancelled, or refused as bad input):
        let the next request probe."""
        self._probing = False

    def failure(self) -> None:
        """A request failed: count it; open (or re-open after a failed probe) at the threshold."""
        self.failures += 1
        self._probing = False
        if self._opened_at is not None or self.failures >= self.failure_threshold:
            self._opened_at = self._clock()


class Node:
    """One server of a pool: its backend, this replica's share of its slots, in-flight count
    and breaker.

    `max_concurrency` is what the node runs at once for every app replica together (its slots:
    vLLM's `--max-num-seqs`, llama.cpp's `--parallel`, `OLLAMA_NUM_PARALLEL`); this replica
    admits at most `limit` = ceil(max_concurrency / replicas) of them, so that the replicas
    together do not queue work inside the node (but for the rounding up) while another node
    has a free slot.
    """

    def __init__(
        self,
        name: str,
        backend: Backend,
        *,
        max_concurrency: int,
        breaker: CircuitBreaker,
        replicas: int = 1,
    ):
        self.name = name
        self.backend = backend
        self.max_concurrency = max_concurrency
        self.limit = -(-max_concurrency // replicas)
        self.breaker = breaker
        self.outstanding = 0
        self.served = 0
        self.busy_until = 0.0
        """Until when (monotonic) the node ranks after the others: it answered busy."""

    @property
    def full(self) -> bool:
        """Whether this replica's share of the node's slots is taken."""
        return self.outstanding >= self.limit


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
        queue_size: int = 8,
        queue_timeout_s: float = 30.0,
        retry_after_s: int = 5,
    ) -> None:
        if not nodes:
            raise ValueError("a balanced backend needs at least one node")
        self.name = name
        self.nodes = nodes
        # What the pool's node time costs; models discovered on it (not declared) take it.
        self.cost_per_hour = cost_per_hour
        self.first_token_timeout_s = first_token_timeout_s
        self.total_timeout_s = total_timeout_s
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self.capabilities: Capabilities = nodes[0].backend.capabilities
        self.last_probe: dict[str, bool] = {}
        self._waiters: list[asyncio.Future[None]] = []
        # Where ties start: it moves on with every request, so that replicas whose own counts
        # are all zero do not all send their next request to the first node.
        self._turn = 0

    @property
    def waiting(self) -> int:
        """Requests of this replica waiting for a free slot on any node."""
        return len(self._waiters)

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

    def _ranked(self, tried: set[str]) -> list[Node]:
        """Untried nodes, best first: free before full, then not recently busy, then fewest
        outstanding, ties in turn."""
        now = time.monotonic()
        count = len(self.nodes)
        ranked = sorted(
            enumerate(self.nodes),
            key=lambda p: (
                p[1].full,
                p[1].busy_until > now,
                p[1].outstanding,
                (p[0] - self._turn) % count,
            ),
        )
        return [node for _, node in ranked if node.name not in tried]

    def candidates(self) -> Iterator[Node]:
        """Nodes to try, in order: least outstanding first, full nodes after free ones.

        Lazy, so a half-open node is only claimed for its probe when the request reaches it.
        """
        for node in self._ranked(set()):
            if node.breaker.allow():
                yield node

    async def _claim(self, tried: set[str], model: str) -> tuple[Node, bool] | None:
        """Claim a slot on the best untried node whose breaker lets a request through, and
        whether the request is the node's half-open probe.

        While every such node is full, wait in the pool's queue for a slot to free on any of
        them (at most `queue_size` waiters, each at most `queue_timeout_s`; past either, 503
        `backend_busy`, counted for `model` as the embedded engine's gates count theirs).
        None when no untried node can serve at all (breakers open, or tried).
        """
        deadline: float | None = None
        while True:
            ranked = self._ranked(tried)
            for node in ranked:
                admitted = None if node.full else node.breaker.admit()
                if admitted is not None:
                    node.outstanding += 1
                    self._turn += 1
                    return node, admitted == "probe"
            # Full nodes, and a free one whose half-open probe is in flight, free up later.
            if not any(node.breaker.state != "open" for node in ranked):
                return None
            if deadline is None:
                if len(self._waiters) >= self.queue_size:
                    raise self._queue_full(model)
                deadline = time.monotonic() + self.queue_timeout_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._queue_full(model)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                with anyio.move_on_after(remaining):
                    await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _release(self, node: Node, probe: bool) -> None:
        """A request left `node`: wake every waiter to look again (they do, in arrival order)."""
        node.outstanding -= 1
        if probe:
            node.breaker.abandon()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _queue_full(self, model: str) -> BackendBusy:
        queue_rejected(model)
        return BackendBusy(
            f"every node of '{self.name}' is at its concurrency limit and "
            f"{len(self._waiters)} requests are waiting; retry in {self.retry_after_s} s",
            retry_after=self.retry_after_s,
        )

    def _exhausted(self, failures: list[str], busy: list[BackendBusy]) -> InferenceError:
        detail = "; ".join(failures) or "every node's circuit breaker is open"
        if busy:
            # A node that said busy is up: a retry can succeed, and a tier up is not needed.
            return BackendBusy(
                f"no node of '{self.name}' could serve now ({detail})",
                retry_after=max(b.retry_after for b in busy),
            )
        return BackendUnavailable(f"no node of '{self.name}' could serve ({detail})")

    def _failed(
        self,
        node: Node,
        exc: Exception,
        failures: list[str],
        busy: list[BackendBusy],
        *,
        timeout: str = "total timeout",
    ) -> None:
        """Record why `node` could not serve; only a broken node counts against its breaker."""
        if isinstance(exc, BackendBusy):
            # The node answered, and says it is full: next node, breaker untouched.
            node.busy_until = time.monotonic() + exc.retry_after
            busy.append(exc)
            failures.append(f"{node.name}: {exc.code}")
            return
        node.breaker.failure()
        reason = exc.code if isinstance(exc, InferenceError) else timeout
        failures.append(f"{node.name}: {reason}")

    async def _call(
        self, call: Callable[[Node], Awaitable[T]], skip: set[str], model: str
    ) -> tuple[Node, T]:
        """Run `call` (a request for `model`) on nodes in order until one answers within the
        total timeout."""
        failures: list[str] = []
        busy: list[BackendBusy] = []
        tried = set(skip)
        while (claim := await self._claim(tried, model)) is not None:
            node, probe = claim
            tried.add(node.name)
            try:
                with anyio.fail_after(self.total_timeout_s):
                    result = await call(node)
            except (TimeoutError, *_NODE_FAILURES) as exc:
                self._failed(node, exc, failures, busy)
                continue
            finally:
                self._release(node, probe)
            node.breaker.success()
            node.served += 1
            return node, result
        raise self._exhausted(failures, busy)

    async def generate(self, request: GenerationRequest) -> Generation:
        """Try nodes in order until one answers within the total timeout."""
        node, result = await self._call(lambda n: n.backend.generate(request), set(), request.model)
        return replace(result, node=node.name)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Find a node that produces a first token in time, then stay on it."""
        failures: list[str] = []
        busy: list[BackendBusy] = []
        tried: set[str] = set()
        while (claim := await self._claim(tried, request.model)) is not None:
            node, probe = claim
            tried.add(node.name)
            try:
                deltas = node.backend.stream(request)
                try:
                    with anyio.fail_after(self.first_token_timeout_s):
                        first = await anext(deltas)
                except (TimeoutError, *_NODE_FAILURES) as exc:
                    self._failed(node, exc, failures, busy, timeout="first-token timeout")
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
                self._release(node, probe)
        raise self._exhausted(failures, busy)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings from the first node that answers (nodes without `embed` are skipped)."""
        without = {n.name for n in self.nodes if getattr(n.backend, "embed", None) is None}

        async def embed(node: Node) -> list[list[float]]:
            vectors: list[list[float]] = await node.backend.embed(model, texts)  # type: ignore[attr-defined]
            return vectors

        _, vectors = await self._call(embed, without, model)
        return vectors

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
