"""The evaluation runner: each (model, item) of a run through the request path's `run_task`
(the gateway, handed in as a `TaskRunner`), one at a time.

Every input takes the one request path, so the set's policy handles identifiers in golden data
exactly as in production, and an external tier only ever receives pseudonymized text (the
gateway refuses anything else). The model is pinned by name; a classification runs with
threshold 0 so it never escalates, and an answer that another model produced anyway (a schema
failure or a context overflow escalated it) counts as a failure of the pinned model.

Runs are resumed after a restart: results are committed one by one and only pending ones run.
One item at a time, with a pause after each, so interactive requests keep the model's slot.

A server's runner claims each run with a lease and renews it as the run goes on
(`appliance.db.leases.leased`): of several replicas on one database one runs it, and if that one
dies another resumes it once the lease ran out (the item in flight at the crash runs again: it
has two audit rows, one result). A runner that finds its lease taken (it stalled past `lease_s`)
stops the run where it is; a result or finish it writes after the lease passed is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from appliance.auth.actor import Actor, Purpose
from appliance.db.leases import leased
from appliance.errors import ApplianceError
from appliance.eval import goldensets
from appliance.eval.metrics import text_of
from appliance.tasks.patience import patiently
from appliance.tasks.types import TaskInput, TaskResult

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from appliance.documents.crypto import Sealer
    from appliance.eval.goldensets import GoldenItem
    from appliance.eval.models import EvalRun
    from appliance.eval.runs import EvalRuns

log = logging.getLogger(__name__)

JUDGE_LABELS = ["acceptable", "unacceptable"]
JUDGE_TASK = "classify"

Progress = Callable[[dict[str, Any]], None]


class TaskRunner(Protocol):
    """The request path as evaluation runs use it (the app hands in the gateway)."""

    async def run_task(self, actor: Actor, task: TaskInput, *, request_id: str) -> TaskResult:
        """Run one task input under the caller's policy, audited like any request."""
        ...


class DetectorStatus(Protocol):
    """The PII detector's state: items wait while it is `loading` (after a restart)."""

    @property
    def status(self) -> str: ...


class RunBook(Protocol):
    """What the runner reads and records through the evaluation service (`Evaluation`)."""

    engine: Engine
    sealer: Sealer
    runs: EvalRuns

    def judge_model(self, actor: Actor, policy_name: str | None) -> str | None:
        """The model that judges answers under the set's policy as resolved for `actor`."""
        ...

    async def finish(self, run_id: str, *, holder: str | None) -> bool:
        """Store the final metrics and mark the run finished (audited) if the claim `holder`
        still holds it; returns whether it did."""
        ...


class EvalRunner:
    """Runs open evaluation runs in creation order, then waits for the next."""

    def __init__(
        self,
        evaluation: RunBook,
        *,
        task_runner: TaskRunner,
        detector: DetectorStatus,
        pause_s: float = 0.05,
    ) -> None:
        self.evaluation = evaluation
        self.task_runner = task_runner
        self.detector = detector
        self.pause_s = pause_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Tell the runner a run was created."""
        self._wake.set()

    async def run_forever(self, *, idle_s: float = 2.0) -> None:
        """The runner's loop (a task of the app lifespan; cancelled at shutdown): claims the
        oldest open run no replica runs and runs it; waits `idle_s` (or a wake) when there is
        none, or when it failed."""
        while True:
            self._wake.clear()
            ran = False
            while self.detector.status == "loading":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            try:
                ran = await self.run_next()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("evaluation runner failed; retrying", exc_info=True)
            if not ran:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=idle_s)

    async def run_next(self) -> bool:
        """Claim the oldest open run no replica runs and `run()` it under its lease: stopped if
        the lease is lost, given back if stopped before its end (a shutdown). Returns whether
        there was one."""
        runs = self.evaluation.runs
        async with leased(runs.leases, runs.claim_next, what="evaluation run") as held:
            if held is None:
                return False
            await self.run(held.work)
        return True

    async def run(
        self, run: EvalRun, *, progress: Progress | None = None, pause_s: float | None = None
    ) -> None:
        """Run every pending result of `run`, then compute its metrics and finish it; `pause_s`
        (default: the runner's) is the pause after each item."""
        evaluation = self.evaluation
        runs = evaluation.runs
        holder = run.lease_holder  # the claim running it (None: the command line's own run)
        await anyio.to_thread.run_sync(partial(runs.mark, run.id, "running", holder=holder))
        found, _, items = await anyio.to_thread.run_sync(
            lambda: goldensets.load_items(
                evaluation.engine, evaluation.sealer, run.set_name, run.version
            )
        )
        by_seq = {item.seq: item for item in items}
        params = goldensets.params_for(found, items)
        # Typed purpose, whatever the stored row says (runs created before it was stored).
        actor = replace(Actor(**run.actor), purpose=Purpose.EVALUATION)
        judge = evaluation.judge_model(actor, found.policy) if run.params.get("judge") else None
        pending = await anyio.to_thread.run_sync(runs.pending, run.id)
        for model, seq in pending:
            await self._item(run, actor, model, by_seq[seq], params, found.policy, judge)
            if progress is not None:
                progress(await anyio.to_thread.run_sync(runs.progress, run.id))
            await asyncio.sleep(self.pause_s if pause_s is None else pause_s)
        if not await evaluation.finish(run.id, holder=holder):
            log.warning("evaluation run finish dropped", extra={"detail": run.id})

    async def _call(self, actor: Actor, task: TaskInput, request_id: str) -> TaskResult:
        return await patiently(
            lambda: self.task_runner.run_task(actor, task, request_id=request_id)
        )

    async def _item(
        self,
        run: EvalRun,
        actor: Actor,
        model: str,
        item: GoldenItem,
        params: dict[str, Any],
        policy: str | None,
        judge: str | None,
    ) -> None:
        item_params = dict(params)
        if run.task == "classify":
            item_params["threshold"] = 0.0  # the model's own answer, never an escalation
        if run.task == "ask":
            item_params["question"] = item.question or params.get("question") or "?"
        task = TaskInput(
            name=run.task, text=item.input, params=item_params, policy=policy, model=model
        )
        request_id = f"eval:{run.id}:{run.models.index(model)}:{item.seq}"
        started = time.perf_counter()
        try:
            result = await self._call(actor, task, request_id)
        except ApplianceError as exc:
            body = exc.to_dict()["error"]
            receipt = body.get("receipt") if isinstance(body, dict) else None
            await self._keep(
                run,
                model,
                item.seq,
                status="failed",
                result={"error": {"code": exc.code}},
                error_code=exc.code[:50],
                audit_id=(receipt or {}).get("audit_id"),
                latency_ms=(time.perf_counter() - started) * 1000,
            )
            return
        except Exception:
            log.error("evaluation item failed unexpectedly", exc_info=True)
            await self._keep(
                run,
                model,
                item.seq,
                status="failed",
                result={"error": {"code": "internal_error"}},
                error_code="internal_error",
            )
            return
        latency_ms = (time.perf_counter() - started) * 1000
        served_by = str(result.receipt.get("model") or model)
        usage = result.usage
        escalated = served_by != model
        content: dict[str, Any] = {"output": result.output, "receipt": result.receipt}
        if judge is not None and not escalated:
            content["judge"] = await self._judge(run, actor, item, result.output, policy, judge)
        await self._keep(
            run,
            model,
            item.seq,
            status="failed" if escalated else "done",
            result=content,
            error_code="escalated" if escalated else None,
            audit_id=result.receipt.get("audit_id"),
            served_by=served_by[:200],
            confidence=result.output.get("confidence") if run.task == "classify" else None,
            latency_ms=latency_ms,
            generation_ms=float(usage.get("total_ms") or 0.0),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            onprem_cost=float(usage.get("onprem_cost") or 0.0),
            frontier_cost=float(usage.get("frontier_cost") or 0.0),
        )

    async def _keep(self, run: EvalRun, model: str, seq: int, **outcome: Any) -> None:
        """Commit one result; one written after the run's lease passed to another is dropped."""
        runs = self.evaluation.runs
        stored = await anyio.to_thread.run_sync(
            partial(runs.finish_result, run.id, model, seq, holder=run.lease_holder, **outcome)
        )
        if not stored:
            log.warning(
                "evaluation result dropped: the run's lease passed to another replica",
                extra={"detail": f"{run.id}:{seq}"},
            )

    async def _judge(
        self,
        run: EvalRun,
        actor: Actor,
        item: GoldenItem,
        output: dict[str, Any],
        policy: str | None,
        judge: str,
    ) -> bool | None:
        """The judge model's verdict on one answer, through the same path (its own audit row)."""
        text = (
            f"Reference answer:\n{item.expected}\n\nCandidate answer:\n{text_of(run.task, output)}"
            "\n\nIs the candidate an acceptable answer with the same meaning as the reference?"
        )
        task = TaskInput(
            name=JUDGE_TASK,
            text=text,
            params={"labels": JUDGE_LABELS, "threshold": 0.0},
            policy=policy,
            model=judge,
        )
        try:
            verdict = await self._call(actor, task, f"eval-judge:{run.id}:{item.seq}")
        except ApplianceError:
            return None
        return bool(verdict.output.get("label") == JUDGE_LABELS[0])
