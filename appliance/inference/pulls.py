"""Model pulls on Ollama backends, run in the background with progress an admin can poll.

A pull is a job: `start()` checks the request, records `model.pull_started` and returns at once;
the job then reads Ollama's progress lines (`pulling manifest`, one line per layer with bytes
`completed` of `total`, `verifying sha256 digest`, `writing manifest`, `success`) node by node
and keeps a running percentage. When it ends, `model.pulled` is recorded (outcome `ok` or the
error code) and the registry re-discovers models, so a pulled model can be routed to at once.

Jobs live in memory: a pull is an operation on a backend, not state the appliance must keep
(Ollama itself resumes an interrupted pull where it left off). Each step is reported as a
`PullEvent` to the `PullAudit` the app hands in (which writes it to the audit trail).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound
from appliance.inference.balancer import BalancedBackend
from appliance.inference.ollama import PullProgress
from appliance.inference.registry import Registry

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$")
"""Ollama's `[namespace/]model[:tag]` names; anything else is refused before a backend sees it."""

KEEP_FINISHED = 50
"""Finished jobs kept for the page and the API; older ones are forgotten."""


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
    def role(self) -> str: ...

    @property
    def source(self) -> str | None: ...


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

    async def __call__(self, event: PullEvent) -> None: ...


def _can_pull(backend: Any) -> bool:
    return callable(getattr(backend, "pull", None))


@dataclass
class PullJob:
    """One pull of `model` on the nodes of `backend`, and how far it got."""

    id: str
    backend: str
    model: str
    nodes: list[str]
    actor: str
    status: Literal["running", "succeeded", "failed"] = "running"
    phase: str = "starting"
    node_index: int = 0
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)
    """digest -> (completed, total) bytes on the current node."""
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

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
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class ModelPulls:
    """Starts pulls on the registry's Ollama backends and keeps their progress."""

    def __init__(self, registry: Registry, audit: PullAudit) -> None:
        self.registry = registry
        self.audit = audit
        self._jobs: dict[str, PullJob] = {}

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
        """Every job still remembered, newest first."""
        return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)

    def get(self, job_id: str) -> PullJob:
        """One job by id."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no model pull '{job_id}'", field="pull_id")
        return job

    async def start(self, actor: Requester, *, backend: str, model: str) -> PullJob:
        """Check the request, audit it, and run the pull in the background."""
        model, backend = model.strip(), backend.strip()
        if not MODEL_NAME.match(model):
            raise InvalidInput(
                "give a model name such as `llama3.2:3b` (letters, digits, `._/:-`)",
                field="model",
            )
        targets = self.targets(backend)
        for job in self._jobs.values():
            if job.status == "running" and job.model == model and job.backend == backend:
                raise Conflict(f"'{model}' is already being pulled on {backend}", field="model")
        job = PullJob(
            id=uuid.uuid4().hex,
            backend=backend,
            model=model,
            nodes=[t.name for t in targets],
            actor=actor.id,
        )
        await self.audit(self._event(actor, job, "model.pull_started", "ok"))
        self._jobs[job.id] = job
        self._forget_old()
        job.task = asyncio.create_task(self._run(actor, job, targets))
        return job

    async def _run(self, actor: Requester, job: PullJob, targets: list[Puller]) -> None:
        outcome, error, cancelled = "ok", None, False
        try:
            for index, target in enumerate(targets):
                job.node_index = index
                job.layers = {}
                async for line in target.pull(job.model):
                    job.note(line)
            # List the new model before reporting success, so a caller that saw `succeeded`
            # can route to it at once.
            await self.registry.discover()
        except ApplianceError as exc:
            outcome, error = exc.code, exc.message
        except asyncio.CancelledError:
            outcome, error, cancelled = "cancelled", "the pull was stopped", True
        except Exception as exc:  # a broken stream must end the job, not leave it running
            outcome, error = "internal_error", type(exc).__name__
        # The audit row is committed before the job reports its end.
        event = self._event(actor, job, "model.pulled", outcome)
        await asyncio.shield(self.audit(event))
        job.finished_at = datetime.now(UTC).isoformat()
        job.error = error
        job.status = "succeeded" if outcome == "ok" else "failed"
        if cancelled:
            raise asyncio.CancelledError

    def _event(self, actor: Requester, job: PullJob, action: str, outcome: str) -> PullEvent:
        return PullEvent(
            action=action,
            outcome=outcome,
            requester=actor,
            model=job.model,
            target=f"{job.backend}:{job.model}",
            details={
                "pull_id": job.id,
                "nodes": len(job.nodes),
                "bytes": sum(t for _, t in job.layers.values()),
            },
        )

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs() if j.status != "running"]
        for job in finished[KEEP_FINISHED:]:
            self._jobs.pop(job.id, None)

    async def aclose(self) -> None:
        """Stop running pulls (app shutdown); each still gets its `model.pulled` row."""
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
