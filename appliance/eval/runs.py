"""Evaluation runs in the database: create, pending items, results, progress, metrics.

A run pins one version of a golden set and a list of models; it holds one result row per model
and item. Each finished result is committed on its own and never overwritten, which is what lets
a run resume after a restart without running a finished item again (as batch jobs do). Outputs
are sealed like every other content at rest.

A server's runner claims a run with a lease (`appliance.db.leases`) and renews it while the run
goes on, so of the replicas on one database one runs it; when that replica dies, its lease runs
out and another resumes the run from its pending results. Results, the run's start and its finish
are written only while the claim that runs the run (its token, the run's `lease_holder`) still
holds it: a stalled runner's late writes are dropped.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import asdict, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table, exists, func, update
from sqlmodel import Session, col, select

from appliance.auth.actor import Purpose
from appliance.db.engine import session_scope
from appliance.db.leases import Lease, LeaseTerms, RowLeases
from appliance.db.models import utcnow
from appliance.db.progress import StatusCounts, status_counts
from appliance.documents.crypto import Sealer
from appliance.documents.store import aware
from appliance.errors import ExternalRefused, InvalidInput, NotFound
from appliance.eval import goldensets
from appliance.eval.metrics import QUALITY_NAME, Outcome, model_metrics, parse_output
from appliance.eval.models import EvalResult, EvalRun
from appliance.policies.resolve import resolve_policy

if TYPE_CHECKING:
    from appliance.auth.actor import Actor
    from appliance.inference.registry import Registry
    from appliance.policies.store import PolicyStore

RUN_ID = re.compile(r"[0-9a-f]{32}")
RATE_WINDOW = timedelta(minutes=5)
"""Rate and ETA are measured over results finished this recently."""
MAX_MODELS = 8
OPEN = ("queued", "running")
RUNS: Table = EvalRun.__table__  # type: ignore[attr-defined]
RESULTS: Table = EvalResult.__table__  # type: ignore[attr-defined]


def _bound(run_id: str, model: str, seq: int) -> str:
    return f"eval-result:{run_id}:{model}:{seq}"


class EvalRuns:
    """Runs and their results."""

    def __init__(self, engine: Engine, sealer: Sealer, *, lease: LeaseTerms | None = None) -> None:
        self.engine = engine
        self.sealer = sealer
        self.leases = RowLeases(engine, RUNS, lease or LeaseTerms())
        """Leases on runs: which server process runs which one now."""

    # -- writing ---------------------------------------------------------------------------------
    def create(
        self,
        actor: Actor,
        *,
        set_name: str,
        models: list[str],
        registry: Registry,
        policies: PolicyStore,
        requestable: Collection[str] = (),
        version: int | None = None,
        limit: int | None = None,
        judge: bool = False,
        runner: str = "server",
    ) -> EvalRun:
        """Store a run with one pending result per model and item; the runner picks it up.

        Every model must be registered; an external one only when the policy the set's inputs
        run under allows external tiers (the gateway then also refuses any text that is not
        pseudonymized). That policy is resolved for `actor` as the gateway resolves it (the set
        names a policy within the actor's floor, else the floor): `requestable` is the
        `requestable_policies` setting.
        """
        models = [m.strip() for m in models if m.strip()]
        if not models:
            raise InvalidInput("name at least one model", field="models")
        if len(set(models)) != len(models) or len(models) > MAX_MODELS:
            raise InvalidInput(f"name 1 to {MAX_MODELS} different models", field="models")
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be at least 1", field="limit")
        found, number, items = goldensets.load_items(self.engine, self.sealer, set_name, version)
        policy = resolve_policy(
            policies,
            key_id=actor.key_id,
            key_policy=actor.key_policy,
            team=actor.team,
            task=found.task,
            requested=found.policy,
            requestable=requestable,
        )
        routing = getattr(policy.policy, "routing", None)
        for model in models:
            _, info = registry.resolve(model)
            if info.tier == "external" and not getattr(routing, "allow_external", False):
                raise ExternalRefused(
                    f"model '{model}' is external and the set's policy ({policy.ref}) does not "
                    "allow external models",
                    field="models",
                )
        if judge and found.task not in ("summarize", "ask"):
            raise InvalidInput("a judge only rates summaries and answers", field="judge")
        chosen = items[:limit] if limit is not None else items
        now = utcnow()
        run = EvalRun(
            id=uuid.uuid4().hex,
            set_id=found.id or 0,
            set_name=found.name,
            version=number,
            task=found.task,
            models=models,
            params={"limit": limit, "judge": judge, "items": len(chosen), "runner": runner},
            actor=asdict(replace(actor, purpose=Purpose.EVALUATION)),
            status="queued",
            total=len(chosen) * len(models),
            created_at=now,
        )
        with session_scope(self.engine) as session:
            session.add(run)
            session.flush()
            session.add_all(
                EvalResult(run_id=run.id, model=model, seq=item.seq, status="pending")
                for model in models
                for item in chosen
            )
        return run

    def finish_result(
        self,
        run_id: str,
        model: str,
        seq: int,
        *,
        holder: str | None,
        status: str,
        result: dict[str, Any],
        **fields: Any,
    ) -> bool:
        """Commit one result (only once: a finished result is never overwritten) if the claim
        `holder` still holds the run (None: a run nobody holds, as the command line's). Returns
        whether it was kept."""
        sealed = self.sealer.seal(json.dumps(result).encode(), bound_to=_bound(run_id, model, seq))
        held = exists().where(RUNS.c.id == run_id, self.leases.held(holder))
        with self.engine.begin() as connection:
            kept = connection.execute(
                update(EvalResult)
                .where(
                    col(EvalResult.run_id) == run_id,
                    col(EvalResult.model) == model,
                    col(EvalResult.seq) == seq,
                    col(EvalResult.status) == "pending",
                    held,
                )
                .values(status=status, output_sealed=sealed, finished_at=utcnow(), **fields)
            )
            return bool(kept.rowcount)

    def mark(
        self,
        run_id: str,
        status: str,
        *,
        holder: str | None,
        metrics: dict[str, Any] | None = None,
        within: Session | None = None,
    ) -> EvalRun | None:
        """Move a run to `running` (stamping its start once), `completed` or `failed`, if the
        claim `holder` still holds it (None: nobody does, as for the command line's runs);
        None when it was not moved.

        With `within` the change joins the caller's transaction (the one that audits it)."""
        if within is not None:
            return self._mark(within, run_id, status, holder, metrics)
        with session_scope(self.engine) as session:
            return self._mark(session, run_id, status, holder, metrics)

    @staticmethod
    def _mark(
        session: Session,
        run_id: str,
        status: str,
        holder: str | None,
        metrics: dict[str, Any] | None,
    ) -> EvalRun | None:
        # Locked until commit (PostgreSQL), so no claim moves the lease between check and write.
        run = session.get(EvalRun, run_id, with_for_update=True)
        if run is None or run.status not in OPEN:
            return None  # a finished run stays as it was finished (by this or another replica)
        if run.lease_holder != holder:
            return None  # the lease passed to another claim: that one marks it
        run.status = status
        if status == "running" and run.started_at is None:
            run.started_at = utcnow()
        if status in ("completed", "failed"):
            run.finished_at = utcnow()
        if metrics is not None:
            run.metrics = metrics
        session.add(run)
        return run

    # -- reading ---------------------------------------------------------------------------------
    def open_runs(self) -> list[EvalRun]:
        """Queued and running runs, oldest first (what the server's runner resumes after a
        restart); runs the command line started are the command line's to finish."""
        with session_scope(self.engine) as session:
            runs = session.exec(
                select(EvalRun)
                .where(col(EvalRun.status).in_(OPEN))
                .order_by(col(EvalRun.created_at))
            )
            return [r for r in runs if r.params.get("runner", "server") == "server"]

    def claim_next(self) -> tuple[EvalRun, Lease] | None:
        """Lease the oldest open server run that no replica runs (or whose runner's lease ran
        out) to a new claim of this process; None when there is none. The run's
        `lease_holder` is the claim's token."""
        for run in self.open_runs():
            claimed = self.leases.claim(
                RUNS.c.id == run.id, RUNS.c.status.in_(OPEN), order_by=[RUNS.c.id]
            )
            if claimed:
                return self.get(run.id), self.leases.lease_of(claimed[0])
        return None

    def get(self, run_id: str) -> EvalRun:
        """One run (404 otherwise)."""
        run = None
        if RUN_ID.fullmatch(run_id):  # anything else cannot name a run (and never reaches SQL)
            with session_scope(self.engine) as session:
                run = session.get(EvalRun, run_id)
        if run is None:
            raise NotFound(f"evaluation run '{run_id}' does not exist", field="run_id")
        return run

    def list_runs(self, *, limit: int = 50) -> list[EvalRun]:
        """The newest runs first."""
        with session_scope(self.engine) as session:
            return list(
                session.exec(select(EvalRun).order_by(col(EvalRun.created_at).desc()).limit(limit))
            )

    def counts(self) -> StatusCounts:
        """Runs by status and the results (item x model) of open runs by status (`/metrics`)."""
        return status_counts(self.engine, RUNS, RESULTS.c.run_id, open_statuses=OPEN)

    def pending(self, run_id: str) -> list[tuple[str, int]]:
        """(model, seq) of the unfinished results, model by model in the run's order."""
        run = self.get(run_id)
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(EvalResult.model, EvalResult.seq).where(
                    EvalResult.run_id == run_id, EvalResult.status == "pending"
                )
            ).all()
        order = {m: i for i, m in enumerate(run.models)}
        return sorted(((m, s) for m, s in rows), key=lambda r: (order.get(r[0], 99), r[1]))

    def progress(self, run_id: str) -> dict[str, Any]:
        """done/total, failures, rate (results per minute, recent) and ETA in seconds."""
        run = self.get(run_id)
        now = utcnow()
        with session_scope(self.engine) as session:
            counts = dict(
                session.exec(
                    select(EvalResult.status, func.count())
                    .where(EvalResult.run_id == run_id)
                    .group_by(col(EvalResult.status))
                ).all()
            )
            recent = session.exec(
                select(func.count(), func.min(EvalResult.finished_at)).where(
                    EvalResult.run_id == run_id,
                    col(EvalResult.finished_at) >= now - RATE_WINDOW,
                )
            ).one()
        done = int(counts.get("done", 0)) + int(counts.get("failed", 0))
        count, since = int(recent[0] or 0), recent[1]
        rate = None
        if count and since is not None:
            elapsed = max((now - aware(since)).total_seconds(), 1.0)
            rate = count / elapsed * 60
        remaining = run.total - done
        return {
            "done": done,
            "failed": int(counts.get("failed", 0)),
            "total": run.total,
            "percent": round(100 * done / run.total, 1) if run.total else 100.0,
            "rate_per_min": round(rate, 2) if rate is not None else None,
            "eta_s": round(remaining / rate * 60)
            if rate and remaining
            else (0 if not remaining else None),
        }

    def outcomes(self, run_id: str) -> dict[str, list[tuple[int, Outcome]]]:
        """Every finished result, opened, with its item's expected answer, by model."""
        run = self.get(run_id)
        _, _, items = goldensets.load_items(self.engine, self.sealer, run.set_name, run.version)
        expected = {item.seq: item.expected for item in items}
        with session_scope(self.engine) as session:
            rows = list(
                session.exec(
                    select(EvalResult)
                    .where(EvalResult.run_id == run_id, EvalResult.status != "pending")
                    .order_by(col(EvalResult.seq))
                )
            )
        out: dict[str, list[tuple[int, Outcome]]] = {m: [] for m in run.models}
        for row in rows:
            content: dict[str, Any] = {}
            if row.output_sealed is not None:
                opened = parse_output(
                    self.sealer.open(
                        row.output_sealed, bound_to=_bound(run_id, row.model, row.seq)
                    ).decode()
                )
                content = opened or {}
            output = content.get("output") if row.status == "done" else None
            out.setdefault(row.model, []).append(
                (
                    row.seq,
                    Outcome(
                        expected=expected.get(row.seq),
                        output=output if isinstance(output, dict) else None,
                        latency_ms=row.latency_ms or 0.0,
                        generation_ms=row.generation_ms or 0.0,
                        prompt_tokens=row.prompt_tokens or 0,
                        completion_tokens=row.completion_tokens or 0,
                        onprem_cost=row.onprem_cost or 0.0,
                        frontier_cost=row.frontier_cost or 0.0,
                        confidence=row.confidence,
                        judge=content.get("judge"),
                    ),
                )
            )
        return out

    def metrics(self, run_id: str) -> dict[str, Any]:
        """Per-model metrics over the results finished so far."""
        run = self.get(run_id)
        by_model = self.outcomes(run_id)
        return {
            "task": run.task,
            "quality_name": QUALITY_NAME[run.task],
            "models": {
                model: model_metrics(run.task, [o for _, o in by_model.get(model, [])])
                for model in run.models
            },
        }


def public_run(run: EvalRun, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run as the API shows it (metrics and counts, never content)."""
    body: dict[str, Any] = {
        "id": run.id,
        "set": run.set_name,
        "version": run.version,
        "task": run.task,
        "models": run.models,
        "params": run.params,
        "status": run.status,
        "total": run.total,
        "created_by": run.actor.get("id"),
        "created_at": aware(run.created_at).isoformat(),
        "started_at": aware(run.started_at).isoformat() if run.started_at else None,
        "finished_at": aware(run.finished_at).isoformat() if run.finished_at else None,
        "metrics": run.metrics,
    }
    if progress is not None:
        body["progress"] = progress
    return body
