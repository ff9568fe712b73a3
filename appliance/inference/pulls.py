"""Model pulls on Ollama backends, run in the background with progress an admin can poll.

A pull is a job: `start()` checks the request, records `model.pull_started` and returns at once;
the job then reads Ollama's progress lines (`pulling manifest`, one line per layer with bytes
`completed` of `total`, `verifying sha256 digest`, `writing manifest`, `success`) node by node
and keeps a running percentage. When it ends, `model.pulled` is recorded (outcome `ok` or the
error code) and the registry re-discovers models, so a pulled model can be routed to at once.

Jobs are kept in the database (a `PullStore` the app hands in), so every replica lists every
pull and refuses a second pull of the same model on the same backend (409), whichever replica
runs the first. The replica running a pull holds a lease on it, renews it and saves progress now
and then; the freshest progress is the runner's own, the others show what was saved last. When
that replica stops (a shutdown gives the pull back; a crash lets its lease run out), another
replica's `run_forever` claims the pull and pulls again from the node it had reached: Ollama
itself continues an interrupted download where it left off. Each step is reported as a
`PullEvent` to the `PullAudit` the app hands in (which writes it to the audit trail). The job's
end and its `model.pulled` are one commit, made only while this replica's claim still holds the
job: a replica that stalled past its lease and finds the pull taken over records nothing (the
new holder pulls and records it), so a pull resumed after a crash has one `model.pull_started`
and one `model.pulled`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import anyio

from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound
from appliance.inference.balancer import BalancedBackend
from appliance.inference.ollama import PullProgress
from appliance.inference.registry import Registry

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$")
"""Ollama's `[namespace/]model[:tag]` names; anything else is refused before a backend sees it."""

KEEP_FINISHED = 50
"""Finished jobs kept for the page and the API; older ones are forgotten."""

SAVE_EVERY_S = 0.5
"""How often a running pull's progress is written for the other replicas to show."""


class Puller(Protocol):
    """A backend that can pull models (`OllamaBackend`)."""

    name: str

    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Ollama's progress lines until `success`."""
        ...


class Requester(Protocol):
    """Who asked for a pull (the caller's `Actor`): id, role and source address."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str | None: ...

    @property
    def source(self) -> str | None: ...


@dataclass(frozen=True)
class StoredRequester:
    """A requester as kept with the job, for the audit row of a pull another replica ends."""

    id: str
    role: str | None = None
    source: str | None = None

    @classmethod
    def of(cls, requester: Requester) -> StoredRequester:
        """The fields of `requester` worth keeping."""
        return cls(id=requester.id, role=requester.role, source=requester.source)


@dataclass(frozen=True)
class PullEvent:
    """One step of a pull worth recording: `model.pull_started` or `model.pulled` (outcome `ok`
    or the error code), with counts only."""

    action: str
    outcome: str
    requester: Requester
    model: str
    target: str
    """`<backend>:<model>`."""
    details: dict[str, int | str]


class PullAudit(Protocol):
    """Records a pull's events (the app writes them to the audit trail); returns once the
    record is committed."""

    async def __call__(
        self, event: PullEvent, *, only_if: Callable[[Any], bool] | None = None
    ) -> bool:
        """Record `event`. With `only_if`, in one transaction with `only_if(connection)`, run
        first, and only when it returns True. Returns whether the event was recorded."""
        ...


class Holding(Protocol):
    """A pull held under its lease (`PullStore.held`): `lost` once another replica has it."""

    @property
    def lost(self) -> bool: ...


class PullStore(Protocol):
    """Where jobs are kept, shared by every replica (`appliance.db.pulls.PullRows`): rows as
    dicts of `PullJob.row()`'s fields, each running one leased to the claim running it (a token:
    `lease_holder` of its row)."""

    @property
    def renew_every_s(self) -> float:
        """How often a running pull's lease is renewed."""
        ...

    def add(self, job: dict[str, Any], *, keep_finished: int) -> str | None:
        """Store a new running job leased to a new claim; its token, or None (nothing stored)
        when the same pull runs."""
        ...

    def save(self, job: dict[str, Any], token: str) -> bool:
        """Write progress if the claim `token` still holds the job."""
        ...

    def finish(self, connection: Any, job: dict[str, Any], token: str) -> bool:
        """Write the end in the transaction of `connection` (the audit's) if the claim `token`
        still holds the job; whether it did."""
        ...

    def remove(self, job_id: str) -> None:
        """Forget a job that never started."""
        ...

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job."""
        ...

    def recent(self) -> list[dict[str, Any]]:
        """Every job kept, newest first."""
        ...

    async def claim_abandoned(self) -> dict[str, Any] | None:
        """A running job nobody holds, now leased to a new claim of this process (off the event
        loop; cancelled meanwhile, the job it took is given back)."""
        ...

    def held(self, job_id: str, token: str) -> AbstractAsyncContextManager[Holding]:
        """Hold a running job while the block runs: renewed, the block stopped once another
        replica has it, the job given back when the block ends early."""
        ...

    async def release(self, job_id: str, token: str) -> None:
        """Give a running job up (off the event loop, to its end even when cancelled)."""
        ...


def _can_pull(backend: Any) -> bool:
    return callable(getattr(backend, "pull", None))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass
class PullJob:
    """One pull of `model` on the nodes of `backend`, and how far it got."""

    id: str
    backend: str
    model: str
    nodes: list[str]
    requester: StoredRequester
    status: Literal["running", "succeeded", "failed"] = "running"
    phase: str = "starting"
    node_index: int = 0
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """digest -> (completed, total) bytes on the current node."""
    error: str | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    lease: str | None = field(default=None, repr=False)
    """The token of the claim that holds the job (its row's `lease_holder`)."""
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def actor(self) -> str:
        """Who asked for the pull."""
        return self.requester.id

    def note(self, line: PullProgress) -> None:
        """Fold one progress line into the job."""
        self.phase = line.status or self.phase
        if line.digest and line.total:
            self.layers[line.digest] = (line.completed or 0, line.total)

    @property
    def node_fraction(self) -> float:
        """Bytes done of all layers seen so far on the current node (0 before the first)."""
        total = sum(t for _, t in self.layers.values())
        done = sum(min(c, t) for c, t in self.layers.values())
        return done / total if total else 0.0

    @property
    def percent(self) -> int:
        """Whole-job progress: finished nodes plus the fraction of the current one."""
        if self.status == "succeeded":
            return 100
        if not self.nodes:
            return 0
        return min(99, int(100 * (self.node_index + self.node_fraction) / len(self.nodes)))

    def public(self) -> dict[str, Any]:
        """What the API and the page show."""
        completed = sum(min(c, t) for c, t in self.layers.values())
        total = sum(t for _, t in self.layers.values())
        return {
            "id": self.id,
            "backend": self.backend,
            "model": self.model,
            "status": self.status,
            "phase": self.phase,
            "percent": self.percent,
            "node": self.nodes[min(self.node_index, len(self.nodes) - 1)] if self.nodes else None,
            "nodes": list(self.nodes),
            "completed_bytes": completed,
            "total_bytes": total,
            "error": self.error,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    def row(self) -> dict[str, Any]:
        """The job as its store keeps it."""
        return {
            "id": self.id,
            "backend": self.backend,
            "model": self.model,
            "nodes": list(self.nodes),
            "requester": {
                "id": self.requester.id,
                "role": self.requester.role,
                "source": self.requester.source,
            },
            "status": self.status,
            "phase": self.phase[:200],
            "node_index": self.node_index,
            "layers": {digest: list(sizes) for digest, sizes in self.layers.items()},
            "error": self.error[:300] if self.error else None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PullJob:
        """A job as its store returned it."""
        requester = row["requester"] or {}
        return cls(
            id=row["id"],
            backend=row["backend"],
            model=row["model"],
            nodes=list(row["nodes"]),
            requester=StoredRequester(
                id=str(requester.get("id", "system")),
                role=requester.get("role"),
                source=requester.get("source"),
            ),
            status=row["status"],
            phase=row["phase"],
            node_index=int(row["node_index"]),
            layers={d: (int(c), int(t)) for d, (c, t) in (row["layers"] or {}).items()},
            error=row["error"],
            started_at=_utc(row["started_at"]),
            finished_at=_utc(row["finished_at"]) if row["finished_at"] else None,
            lease=row.get("lease_holder"),
        )


class ModelPulls:
    """Starts pulls on the registry's Ollama backends, keeps their progress in `store`, and
    resumes pulls a stopped replica left unfinished."""

    def __init__(self, registry: Registry, audit: PullAudit, store: PullStore) -> None:
        self.registry = registry
        self.audit = audit
        self.store = store
        self._running: dict[str, PullJob] = {}
        """The jobs this process runs: their progress is fresher than the store's."""

    def pullable(self) -> list[str]:
        """Names an admin may pull on: Ollama pools and each of their nodes."""
        names: list[str] = []
        for backend in self.registry.backends:
            if isinstance(backend, BalancedBackend):
                nodes = [n.backend for n in backend.nodes if _can_pull(n.backend)]
                if nodes:
                    names.append(backend.name)
                    names.extend(n.name for n in nodes if n.name != backend.name)
            elif _can_pull(backend):
                names.append(backend.name)
        return names

    def targets(self, name: str) -> list[Puller]:
        """The node backends a pull on `name` (a pool or one node) runs on; a clear 422 else."""
        known: list[str] = []
        for backend in self.registry.backends:
            nodes: list[Any] = (
                [n.backend for n in backend.nodes]
                if isinstance(backend, BalancedBackend)
                else [backend]
            )
            known.append(backend.name)
            if backend.name == name:
                found = [n for n in nodes if _can_pull(n)]
                if not found:
                    raise InvalidInput(
                        f"backend '{name}' cannot pull models: the embedded engine serves the "
                        "bundled models only; pull on an Ollama backend",
                        field="backend",
                    )
                return found
            for node in nodes:
                known.append(node.name)
                if node.name == name:
                    if not _can_pull(node):
                        raise InvalidInput(f"backend '{name}' cannot pull models", field="backend")
                    return [node]
        raise InvalidInput(
            f"no backend named '{name}' (known: {', '.join(sorted(set(known))) or 'none'})",
            field="backend",
        )

    def jobs(self) -> list[PullJob]:
        """Every job kept, by any replica, newest first (blocking: reads the store)."""
        jobs = [PullJob.from_row(row) for row in self.store.recent()]
        return [self._running.get(job.id, job) for job in jobs]

    def get(self, job_id: str) -> PullJob:
        """One job by id, whichever replica runs it (blocking: reads the store)."""
        if job_id in self._running:
            return self._running[job_id]
        row = self.store.get(job_id) if len(job_id) <= 32 else None
        if row is None:
            raise NotFound(f"no model pull '{job_id}'", field="pull_id")
        return PullJob.from_row(row)

    async def start(self, actor: Requester, *, backend: str, model: str) -> PullJob:
        """Check the request, audit it, and run the pull in the background."""
        model, backend = model.strip(), backend.strip()
        if not MODEL_NAME.match(model):
            raise InvalidInput(
                "give a model name such as `llama3.2:3b` (letters, digits, `._/:-`)",
                field="model",
            )
        targets = self.targets(backend)
        job = PullJob(
            id=uuid.uuid4().hex,
            backend=backend,
            model=model,
            nodes=[t.name for t in targets],
            requester=StoredRequester.of(actor),
        )
        # Stored first: the row's unique index is what refuses the same pull on any replica.
        job.lease = await anyio.to_thread.run_sync(
            lambda: self.store.add(job.row(), keep_finished=KEEP_FINISHED)
        )
        if job.lease is None:
            raise Conflict(f"'{model}' is already being pulled on {backend}", field="model")
        try:
            await self.audit(self._event(job, "model.pull_started", "ok"))
        except BaseException:
            await anyio.to_thread.run_sync(self.store.remove, job.id)
            raise
        self._launch(job, targets)
        return job

    def _launch(self, job: PullJob, targets: list[Puller]) -> None:
        assert job.lease is not None  # added or claimed: held by this process
        self._running[job.id] = job
        job.task = asyncio.create_task(self._run(job, job.lease, targets))

    async def run_forever(self, *, idle_s: float | None = None) -> None:
        """Resume pulls that a stopped replica left running, claimed one at a time (a task
        of the app lifespan; cancelled at shutdown)."""
        wait = idle_s if idle_s is not None else self.store.renew_every_s
        while True:
            try:
                row = await self.store.claim_abandoned()
                if row is not None:
                    self._resume(PullJob.from_row(row))
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("resuming model pulls failed; retrying", exc_info=True)
            await asyncio.sleep(wait)

    def _resume(self, job: PullJob) -> None:
        log.info("resuming a model pull", extra={"detail": f"{job.backend}:{job.model}"})
        try:
            found = {t.name: t for t in self.targets(job.backend)}
            targets = [found[name] for name in job.nodes]
        except (InvalidInput, KeyError):
            # The backend or one of its nodes is no longer configured: the pull ends failed.
            job.node_index, targets = len(job.nodes), []
            job.error = "the backend's nodes changed while the pull was interrupted"
        self._launch(job, targets)

    async def _run(self, job: PullJob, token: str, targets: list[Puller]) -> None:
        try:
            # Stopped (a shutdown: given back) or taken over (another replica pulls on): the
            # pull is not over, and whoever holds it next pulls on.
            async with self.store.held(job.id, token):
                outcome, error = await self._pull(job, token, targets)
                ended = replace(
                    job,
                    finished_at=datetime.now(UTC),
                    error=error,
                    status="succeeded" if outcome == "ok" else "failed",
                )
                # The end and its audit row are one commit, made only while this claim holds
                # the job; the end is stored before this replica shows it.
                recorded = await asyncio.shield(
                    self.audit(
                        self._event(job, "model.pulled", outcome),
                        only_if=lambda connection: self.store.finish(
                            connection, ended.row(), token
                        ),
                    )
                )
                if not recorded:
                    log.warning(
                        "model pull end dropped: its lease passed to another replica",
                        extra={"detail": job.id},
                    )
                    return
                job.finished_at, job.error, job.status = ended.finished_at, error, ended.status
        finally:
            self._running.pop(job.id, None)

    async def _give_back(self, job: PullJob) -> None:
        self._running.pop(job.id, None)
        if job.lease is not None:
            await self.store.release(job.id, job.lease)

    async def _pull(
        self, job: PullJob, token: str, targets: list[Puller]
    ) -> tuple[str, str | None]:
        """Pull on each node from the one the job had reached; (outcome, error)."""
        if job.error is not None:
            return "invalid_input", job.error
        saved = time.monotonic()
        try:
            for index in range(job.node_index, len(targets)):
                job.node_index, job.layers = index, {}
                async for line in targets[index].pull(job.model):
                    job.note(line)
                    if time.monotonic() - saved >= SAVE_EVERY_S:
                        saved = time.monotonic()
                        await anyio.to_thread.run_sync(self.store.save, job.row(), token)
            # List the new model before reporting success, so a caller that saw `succeeded`
            # can route to it at once.
            await self.registry.discover()
        except ApplianceError as exc:
            return exc.code, exc.message
        except Exception as exc:  # a broken stream must end the job, not leave it running
            return "internal_error", type(exc).__name__
        return "ok", None

    def _event(self, job: PullJob, action: str, outcome: str) -> PullEvent:
        return PullEvent(
            action=action,
            outcome=outcome,
            requester=job.requester,
            model=job.model,
            target=f"{job.backend}:{job.model}",
            details={
                "pull_id": job.id,
                "nodes": len(job.nodes),
                "bytes": sum(t for _, t in job.layers.values()),
            },
        )

    async def aclose(self) -> None:
        """Stop the pulls this process runs (app shutdown): each is given back, to be resumed
        by another replica or after the restart."""
        tasks = [j.task for j in self._running.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for job in list(self._running.values()):  # cancelled before it ever ran
            await self._give_back(job)
