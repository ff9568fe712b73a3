"""Batch jobs in the database: create (sealed items), progress, results, delete, expire.

Inputs and results are content, so both are sealed with the content key (AES-GCM) and expire like
documents: the policy's `retention.days` when it keeps content `encrypted`, else
`document_default_retention_hours`. Each finished item is committed on its own, which is what
lets a job resume after a restart without running a finished item again.

Items are claimed with leases (`appliance.db.leases`), so the replicas on one database share a
job's items, several at once: an item is run by the replica that claimed it, its result is kept
only while that replica still holds the lease, and an item whose replica died is claimed again
once its lease runs out. The job is marked completed once, by whoever finds its last item done.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, Table, delete, exists, func, update
from sqlmodel import col, select

from appliance.auth.actor import Purpose
from appliance.batches.models import BatchItem, BatchJob
from appliance.db.engine import scrub, secure_delete_on, session_scope
from appliance.db.leases import Lease, LeaseTerms, RowLeases
from appliance.db.models import utcnow
from appliance.db.progress import StatusCounts, status_counts
from appliance.documents.crypto import Sealer
from appliance.documents.service import retention_for
from appliance.documents.store import aware
from appliance.errors import NotFound

if TYPE_CHECKING:
    from appliance.auth.actor import Actor
    from appliance.policies.schema import LoadedPolicy
    from appliance.policies.store import PolicyStore
    from appliance.tasks.templates import TaskCatalog

SEALED_PARAMS = "sealed"
"""The one key of a job's stored `params`: the sealed JSON of the real ones, base64."""

log = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=5)
"""Rate and ETA are measured over items finished this recently."""

ITEMS: Table = BatchItem.__table__  # type: ignore[attr-defined]
JOBS: Table = BatchJob.__table__  # type: ignore[attr-defined]
OPEN = ("queued", "running")
"""Statuses of jobs with work left."""


@dataclass(frozen=True)
class ClaimedItem:
    """An item leased to this process: its position, its input and how often it was claimed
    (more than once: a replica stopped while running it)."""

    seq: int
    input: dict[str, Any]
    attempts: int


class PolicyRequests(Protocol):
    """The check of a policy a request names (the gateway's, handed in by the app)."""

    def requested_policy(
        self, actor: Actor, name: str | None, *, task: str | None = None
    ) -> LoadedPolicy:
        """The policy a request naming `name` runs under; refuses one the caller may not name."""
        ...


class Batches:
    """Jobs and items, always read through their owner."""

    def __init__(
        self,
        engine: Engine,
        sealer: Sealer,
        *,
        tasks: TaskCatalog,
        policies: PolicyStore,
        policy_requests: PolicyRequests,
        default_retention: timedelta,
        lease: LeaseTerms | None = None,
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.tasks = tasks
        self.policies = policies
        self.policy_requests = policy_requests
        self.default_retention = default_retention
        self.leases = RowLeases(engine, ITEMS, lease or LeaseTerms())
        """Leases on items: who runs which one now."""

    # -- writing ---------------------------------------------------------------------------------
    def create(
        self,
        actor: Actor,
        *,
        task: str,
        params: dict[str, Any],
        policy: str | None,
        model: str | None,
        items: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Store a job and all its items in one transaction; the runner picks it up."""
        template = self.tasks.get(task)
        template.validate_params(params)
        if policy is not None:
            # The caller's assignment is a floor here too (403 `policy_not_allowed`).
            self.policy_requests.requested_policy(actor, policy, task=task)
        # The job's content expires under the caller's own policy (key > team > default).
        resolved = self.policy_requests.requested_policy(actor, None)
        now = utcnow()
        job = BatchJob(
            id=uuid.uuid4().hex,
            owner=actor.id,
            actor=asdict(replace(actor, purpose=Purpose.BATCH)),
            task=task,
            params={},
            policy=policy,
            model=model,
            status="queued",
            total=len(items),
            created_at=now,
            expires_at=now + retention_for(resolved, self.default_retention),
        )
        job.params = self._seal_params(job.id, params)
        rows = [
            BatchItem(
                job_id=job.id,
                seq=seq,
                status="pending",
                input_sealed=self.sealer.seal(
                    json.dumps(item).encode(), bound_to=f"batch:{job.id}:{seq}"
                ),
            )
            for seq, item in enumerate(items)
        ]
        with session_scope(self.engine) as session:
            session.add(job)
            session.flush()
            session.add_all(rows)
        return self.status(actor.id, job.id)

    def finish_item(
        self,
        job_id: str,
        seq: int,
        *,
        holder: str,
        status: str,
        result: dict[str, Any],
        error_code: str | None,
        audit_id: str | None,
    ) -> bool:
        """Commit one item's outcome if the claim `holder` (its lease's token) still holds it (a
        conditional update: a finished item is never overwritten, and a result from a claim
        whose lease passed to another is dropped). Returns whether it was kept."""
        sealed = self.sealer.seal(
            json.dumps(result).encode(), bound_to=f"batch-result:{job_id}:{seq}"
        )
        with self.engine.begin() as connection:
            kept = connection.execute(
                update(BatchItem)
                .where(
                    col(BatchItem.job_id) == job_id,
                    col(BatchItem.seq) == seq,
                    col(BatchItem.status) == "pending",
                    self.leases.held(holder),
                )
                .values(
                    status=status,
                    result_sealed=sealed,
                    error_code=error_code,
                    audit_id=audit_id,
                    finished_at=utcnow(),
                    lease_holder=None,
                    lease_expires_at=None,
                )
            )
            return bool(kept.rowcount)

    def claim(self, job_id: str) -> tuple[ClaimedItem, Lease] | None:
        """Lease the job's next pending item that nobody runs (or whose runner's lease ran
        out) to a new claim of this process; None when there is none."""
        rows = self.leases.claim(
            ITEMS.c.job_id == job_id,
            ITEMS.c.status == "pending",
            order_by=[ITEMS.c.seq],
            values={"attempts": ITEMS.c.attempts + 1},
        )
        if not rows:
            return None
        row = rows[0]
        item = ClaimedItem(
            seq=row.seq,
            input=self._open_input(job_id, row.seq, row.input_sealed),
            attempts=int(row.attempts),
        )
        return item, self.leases.lease_of(row)

    def begin(self, job_id: str) -> None:
        """Mark a queued job `running`, stamping its start (once, whichever replica is first)."""
        with session_scope(self.engine) as session:
            session.execute(
                update(BatchJob)
                .where(col(BatchJob.id) == job_id, col(BatchJob.status) == "queued")
                .values(status="running", started_at=utcnow())
            )

    def complete_if_done(self, job_id: str) -> bool:
        """Mark the job `completed` if no item is pending; True for the one caller that did.

        Called after an item's commit, so of two replicas finishing the last two items at once
        the later one sees both done; the status condition lets only one of them mark it."""
        pending = exists().where(
            col(BatchItem.job_id) == job_id, col(BatchItem.status) == "pending"
        )
        with self.engine.begin() as connection:
            marked = connection.execute(
                update(BatchJob)
                .where(
                    col(BatchJob.id) == job_id,
                    col(BatchJob.status).in_(("queued", "running")),
                    ~pending,
                )
                .values(status="completed", finished_at=utcnow())
            )
            return bool(marked.rowcount)

    def delete(self, owner: str | None, job_id: str, *, scrub_after: bool = True) -> bool:
        """Remove a job with its items and results (`owner` None: any owner, for the sweeper).

        As for documents, the freed space is zeroed and the files are scrubbed after the commit
        (the sweeper passes `scrub_after=False` and scrubs once for all the jobs it removed).
        """
        with session_scope(self.engine) as session:
            statement = select(BatchJob).where(BatchJob.id == job_id)
            if owner is not None:
                statement = statement.where(BatchJob.owner == owner)
            job = session.exec(statement).first()
            if job is None:
                return False
            secure_delete_on(session)
            session.execute(delete(BatchItem).where(col(BatchItem.job_id) == job_id))
            session.delete(job)
        self.scrub_pending = True
        if scrub_after:
            self.scrub()
        return True

    scrub_pending = True
    """Whether deleted content may still sit in the database files: True at start-up, as the
    process before this one may have died between a deletion and its scrub."""

    def scrub(self) -> None:
        """Leave no copy of deleted items in the database files; a failure is logged and left
        to the next sweep (the deletion itself has committed)."""
        self.scrub_pending = True
        try:
            scrub(self.engine, BatchItem.__tablename__)
        except Exception:
            log.error("scrubbing deleted batch items failed; the next sweep retries", exc_info=True)
            return
        self.scrub_pending = False

    def expired(self, now: datetime) -> list[str]:
        """Ids of jobs past their expiry."""
        with session_scope(self.engine) as session:
            return list(session.exec(select(BatchJob.id).where(col(BatchJob.expires_at) <= now)))

    # -- reading ---------------------------------------------------------------------------------
    def open_jobs(self) -> list[BatchJob]:
        """Jobs with work left, oldest first (their `params` opened, on detached copies)."""
        with session_scope(self.engine) as session:
            jobs = list(
                session.exec(
                    select(BatchJob)
                    .where(col(BatchJob.status).in_(OPEN))
                    .order_by(col(BatchJob.created_at))
                )
            )
        for job in jobs:
            # After the session closed: the opened params are never written back.
            job.params = self._open_params(job)
        return jobs

    def counts(self) -> StatusCounts:
        """Jobs by status and the items of open jobs by status, of every owner (`/metrics`)."""
        return status_counts(self.engine, JOBS, ITEMS.c.job_id, open_statuses=OPEN)

    def _seal_params(self, job_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Job-level params are content (a question, labels, a schema): sealed like items."""
        sealed = self.sealer.seal(json.dumps(params).encode(), bound_to=f"batch-params:{job_id}")
        return {SEALED_PARAMS: base64.b64encode(sealed).decode("ascii")}

    def _open_params(self, job: BatchJob) -> dict[str, Any]:
        stored = job.params or {}
        if set(stored) != {SEALED_PARAMS}:
            return dict(stored)  # a job stored before params were sealed
        sealed = base64.b64decode(stored[SEALED_PARAMS])
        opened: dict[str, Any] = json.loads(
            self.sealer.open(sealed, bound_to=f"batch-params:{job.id}")
        )
        return opened

    def _input(self, row: BatchItem) -> dict[str, Any]:
        return self._open_input(row.job_id, row.seq, row.input_sealed)

    def _open_input(self, job_id: str, seq: int, sealed: bytes) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(
            self.sealer.open(sealed, bound_to=f"batch:{job_id}:{seq}")
        )
        return value

    def _job(self, owner: str, job_id: str) -> BatchJob:
        with session_scope(self.engine) as session:
            job = session.exec(
                select(BatchJob).where(BatchJob.id == job_id, BatchJob.owner == owner)
            ).first()
        if job is None:
            raise NotFound(f"batch '{job_id}' does not exist", field="id")
        return job

    def status(self, owner: str, job_id: str) -> dict[str, Any]:
        """Counts, rate (items/s over the last minutes) and ETA of one of the owner's jobs."""
        job = self._job(owner, job_id)
        now = utcnow()
        with session_scope(self.engine) as session:
            counts = dict(
                session.exec(
                    select(BatchItem.status, func.count())
                    .where(BatchItem.job_id == job_id)
                    .group_by(col(BatchItem.status))
                ).all()
            )
            recent = session.exec(
                select(func.count(), func.min(BatchItem.finished_at)).where(
                    BatchItem.job_id == job_id,
                    col(BatchItem.finished_at) >= now - RATE_WINDOW,
                )
            ).one()
        done, failed = int(counts.get("done", 0)), int(counts.get("failed", 0))
        pending = int(counts.get("pending", 0))
        rate = None
        count, oldest = int(recent[0]), recent[1]
        if count >= 2 and oldest is not None:
            elapsed = (now - aware(oldest)).total_seconds()
            rate = round(count / elapsed, 3) if elapsed > 0 else None
        eta = round(pending / rate, 1) if rate and job.status != "completed" else None
        return {
            "id": job.id,
            "task": job.task,
            "status": job.status,
            "counts": {"total": job.total, "done": done, "failed": failed, "pending": pending},
            "rate_per_s": rate,
            "eta_s": 0.0 if job.status == "completed" else eta,
            "created_at": aware(job.created_at).isoformat(),
            "started_at": aware(job.started_at).isoformat() if job.started_at else None,
            "finished_at": aware(job.finished_at).isoformat() if job.finished_at else None,
            "expires_at": aware(job.expires_at).isoformat(),
        }

    def results(self, owner: str, job_id: str) -> list[dict[str, Any]]:
        """Every item in order: its caller id, status and (when finished) output or error."""
        self._job(owner, job_id)
        with session_scope(self.engine) as session:
            rows = list(
                session.exec(
                    select(BatchItem).where(BatchItem.job_id == job_id).order_by(col(BatchItem.seq))
                )
            )
        out: list[dict[str, Any]] = []
        for row in rows:
            entry: dict[str, Any] = {"seq": row.seq, "id": self._input(row).get("id")}
            entry["status"] = row.status
            if row.result_sealed is not None:
                bound = f"batch-result:{row.job_id}:{row.seq}"
                entry |= json.loads(self.sealer.open(row.result_sealed, bound_to=bound))
            out.append(entry)
        return out


def results_csv(results: list[dict[str, Any]]) -> str:
    """Results as CSV: seq, id, status, output (JSON), error code, audit id."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["seq", "id", "status", "output", "error_code", "audit_id"])
    for entry in results:
        writer.writerow(
            [
                entry["seq"],
                "" if entry.get("id") is None else entry["id"],
                entry["status"],
                json.dumps(entry["output"]) if "output" in entry else "",
                (entry.get("error") or {}).get("code", ""),
                entry.get("audit_id") or "",
            ]
        )
    return buffer.getvalue()


def results_jsonl(results: list[dict[str, Any]]) -> str:
    """Results as JSON lines, one item a line."""
    return "".join(json.dumps(entry) + "\n" for entry in results)
