"""The evaluation service: upload sets, start runs, read reports, apply recommendations.

Everything here is audited with counts, names and hashes only: `eval.set_uploaded`,
`eval.run_started`, `eval.run_finished`, `eval.applied`. Golden content and model outputs are
sealed at rest and never reach a log or the audit trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from appliance.audit.events import EvalApplied, EvalRunFinished, EvalRunStarted, EvalSetUploaded
from appliance.documents.crypto import Sealer
from appliance.errors import ApplianceError, InvalidInput, NotFound
from appliance.eval import goldensets
from appliance.eval.goldensets import Format
from appliance.eval.overrides import RoutingOverrides
from appliance.eval.recommend import calibrate, calibration_pair, recommend
from appliance.eval.runner import JUDGE_TASK, DetectorStatus, EvalRunner, TaskRunner
from appliance.eval.runs import EvalRuns, public_run
from appliance.inference.base import TIERS
from appliance.policies.resolve import resolve_policy

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from appliance.audit.store import AuditLog
    from appliance.auth.actor import Actor
    from appliance.db.leases import LeaseTerms
    from appliance.inference.registry import Registry
    from appliance.policies.store import PolicyStore
    from appliance.tasks.templates import TaskCatalog

DEFAULT_BAR = 0.8
"""The quality bar a report uses when none is given."""


def check_bar(bar: float) -> float:
    """A quality bar in 0..1."""
    if not 0.0 <= bar <= 1.0:
        raise InvalidInput("the quality bar must be between 0 and 1", field="bar")
    return bar


class Evaluation:
    """Golden sets, runs and routing overrides, as the API, pages and CLI use them.

    Runs go through `task_runner` (the request path); the evaluation's own `runner` is built
    here, handed this service, so the two are wired in one step."""

    def __init__(
        self,
        *,
        engine: Engine,
        sealer: Sealer,
        audit: AuditLog,
        policies: PolicyStore,
        registry: Registry,
        tasks: TaskCatalog,
        task_runner: TaskRunner,
        detector: DetectorStatus,
        overrides: RoutingOverrides,
        requestable: tuple[str, ...] = (),
        pause_s: float = 0.05,
        lease: LeaseTerms | None = None,
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.audit = audit
        self.policies = policies
        self.registry = registry
        self.tasks = tasks
        self.overrides = overrides
        self.requestable = requestable
        """Policies a caller with no assignment may name (the `requestable_policies` setting)."""
        self.runs = EvalRuns(engine, sealer, lease=lease)
        self.runner = EvalRunner(self, task_runner=task_runner, detector=detector, pause_s=pause_s)

    # -- golden sets -----------------------------------------------------------------------------
    async def upload(
        self,
        actor: Actor,
        *,
        name: str,
        data: bytes,
        task: str | None = None,
        fmt: Format | None = None,
        mode: str = "create",
        policy: str | None = None,
        params: dict[str, Any] | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        """Create a set (`mode` create), or make a new version holding the file's rows
        (`replace`) or the latest rows plus the file's (`append`)."""
        name = goldensets.check_name(name)
        if mode not in ("create", "replace", "append"):
            raise InvalidInput("mode must be create, replace or append", field="mode")
        if mode == "create":
            if task is None:
                raise InvalidInput("name the task the set measures", field="task")
            goldensets.check_task(task)
            if policy is not None:
                if not goldensets.NAME.match(policy):
                    raise InvalidInput("no such policy", field="policy")
                self.policies.get(policy)
            self._check_params(task, params or {})
        else:
            task = (await anyio.to_thread.run_sync(goldensets.get_set, self.engine, name)).task
        chosen_task: str = task
        rows = await anyio.to_thread.run_sync(
            lambda: goldensets.parse(data, task=chosen_task, fmt=fmt)
        )
        if chosen_task == "ask":
            known = params if mode == "create" else goldensets.get_set(self.engine, name).params
            if not (known or {}).get("question"):
                for number, row in enumerate(rows, start=1):
                    if not row.get("question"):
                        raise InvalidInput(
                            f"item {number}: an ask item needs a question (a `question` field, "
                            "or params.question for the whole set)",
                            field=f"item {number}.question",
                        )
        if mode == "create":
            version = await anyio.to_thread.run_sync(
                lambda: goldensets.create_set(
                    self.engine,
                    self.sealer,
                    name=name,
                    task=chosen_task,
                    rows=rows,
                    author=actor.id,
                    policy=policy,
                    params=params,
                    description=description,
                )
            )
        elif mode == "replace":
            version = await anyio.to_thread.run_sync(
                lambda: goldensets.replace_items(
                    self.engine, self.sealer, name, rows, author=actor.id
                )
            )
        else:
            version = await anyio.to_thread.run_sync(
                lambda: goldensets.append_rows(
                    self.engine, self.sealer, name, rows, author=actor.id
                )
            )
        body = await anyio.to_thread.run_sync(lambda: self.set_info(name))
        await self.audit.append(
            EvalSetUploaded(
                actor=actor.id,
                role=actor.role,
                source=actor.source,
                target=name,
                outcome=mode,
                details={
                    "task": chosen_task,
                    "version": version,
                    "items": int(body["items"]),
                    "added": len(rows),
                    "sha256": str(body["sha256"]),
                },
            ).record()
        )
        return body

    def _check_params(self, task: str, params: dict[str, Any]) -> None:
        allowed = {"classify": {"labels"}, "extract": {"schema"}, "ask": {"question"}}.get(
            task, {"max_words"}
        )
        unknown = set(params) - allowed
        if unknown:
            raise InvalidInput(
                f"params for {task} may hold only {', '.join(sorted(allowed))}",
                field=f"params.{sorted(unknown)[0]}",
            )
        if params:
            template = self.tasks.get(task)
            probe = dict(params)
            if task == "classify" and "labels" not in probe:
                probe["labels"] = ["a", "b"]
            if task == "extract" and "schema" not in probe:
                probe["schema"] = {"type": "object"}
            if task == "ask" and "question" not in probe:
                probe["question"] = "?"
            template.validate_params(probe)

    def set_info(self, name: str) -> dict[str, Any]:
        """One set's metadata and its versions."""
        found = goldensets.get_set(self.engine, name)
        history = goldensets.versions(self.engine, name)
        body = goldensets.public_set(found, history[0] if history else None)
        body["versions"] = [goldensets.public_version(v) for v in history]
        return body

    # -- runs ------------------------------------------------------------------------------------
    async def start(
        self,
        actor: Actor,
        *,
        set_name: str,
        models: list[str],
        version: int | None = None,
        limit: int | None = None,
        judge: bool = False,
        wake: bool = True,
        runner: str = "server",
    ) -> dict[str, Any]:
        """Create a run (audited `eval.run_started`) and wake the runner."""
        run = await anyio.to_thread.run_sync(
            lambda: self.runs.create(
                actor,
                set_name=set_name,
                models=models,
                registry=self.registry,
                policies=self.policies,
                requestable=self.requestable,
                version=version,
                limit=limit,
                judge=judge,
                runner=runner,
            )
        )
        await self.audit.append(
            EvalRunStarted(
                actor=actor.id,
                role=actor.role,
                source=actor.source,
                target=run.id,
                details={
                    "set": run.set_name,
                    "version": run.version,
                    "task": run.task,
                    "models": ",".join(run.models)[:200],
                    "items": run.total,
                },
            ).record()
        )
        if wake:
            self.runner.wake()
        return public_run(run, await anyio.to_thread.run_sync(self.runs.progress, run.id))

    async def finish(self, run_id: str, *, holder: str | None) -> bool:
        """Store the final metrics and mark the run finished, in one commit with its audited
        `eval.run_finished` (a crash leaves neither or both), if the claim `holder` still holds
        the run (None: nobody does, as for the command line's runs). Returns whether it did."""
        runs, audit = self.runs, self.audit

        def finish() -> bool:
            metrics = runs.metrics(run_id)
            progress = runs.progress(run_id)
            status = "completed" if progress["done"] == progress["total"] else "failed"
            with audit.transaction() as tx:
                run = runs.mark(run_id, status, holder=holder, metrics=metrics, within=tx.session)
                if run is None:
                    return False
                tx.append(
                    EvalRunFinished(
                        actor=str(run.actor.get("id", "system")),
                        role=run.actor.get("role"),
                        target=run_id,
                        outcome=status,
                        details={
                            "set": run.set_name,
                            "version": run.version,
                            "done": progress["done"],
                            "failed": progress["failed"],
                            "total": progress["total"],
                        },
                    ).record()
                )
            return True

        return await anyio.to_thread.run_sync(finish)

    def judge_model(self, actor: Actor, policy_name: str | None) -> str | None:
        """The strongest model the policy of the judge's requests allows (external only when
        allowed): the set's policy as resolved for `actor`. None when there is no such model,
        or when that policy is no longer the actor's to name (each item then fails on its own).
        """
        try:
            policy = resolve_policy(
                self.policies,
                key_id=actor.key_id,
                key_policy=actor.key_policy,
                team=actor.team,
                task=JUDGE_TASK,
                requested=policy_name,
                requestable=self.requestable,
            )
        except ApplianceError:
            return None
        routing = getattr(policy.policy, "routing", None)
        allow = bool(getattr(routing, "allow_external", False))
        max_tier = getattr(routing, "max_tier", "large") or "large"
        if allow:
            max_tier = "external"
        registry = self.registry
        for tier in reversed(TIERS[: TIERS.index(max_tier) + 1]):
            info = registry.model_for_tier(tier)
            if info is not None:
                return info.name
        return None

    # -- reports ---------------------------------------------------------------------------------
    def report(self, run_id: str, *, bar: float = DEFAULT_BAR) -> dict[str, Any]:
        """The run with progress, metrics (final, or so far), recommendation and calibration."""
        check_bar(bar)
        run = self.runs.get(run_id)
        progress = self.runs.progress(run_id)
        metrics = run.metrics if run.metrics is not None else self.runs.metrics(run_id)
        per_model: dict[str, dict[str, Any]] = metrics["models"]
        body = public_run(run, progress)
        body["metrics"] = metrics
        body["recommendation"] = recommend(per_model, bar)
        body["calibration"] = None
        pair = calibration_pair(per_model)
        if run.task == "classify" and pair is not None:
            outcomes = self.runs.outcomes(run_id)
            small, strong = pair
            body["calibration"] = {
                "small": small,
                "strong": strong,
                **calibrate(outcomes.get(small, []), outcomes.get(strong, []), bar),
            }
        return body

    async def apply(
        self,
        actor: Actor,
        run_id: str,
        *,
        bar: float = DEFAULT_BAR,
        model: bool = True,
        threshold: bool = True,
    ) -> dict[str, Any]:
        """Apply a run's recommendation to routing in one step (audited `eval.applied`):
        the recommended model becomes the task's default, and for a classification the
        calibrated threshold (with the small model as the default) replaces the setting."""
        if not model and not threshold:
            raise InvalidInput("apply the model, the threshold or both", field="apply")
        report = await anyio.to_thread.run_sync(lambda: self.report(run_id, bar=bar))
        if report["status"] != "completed":
            raise InvalidInput("the run has not finished", field="run_id")
        chosen_model: str | None = None
        chosen_threshold: float | None = None
        calibration = report.get("calibration")
        if threshold and calibration is not None and calibration.get("threshold") is not None:
            chosen_threshold = float(calibration["threshold"])
            chosen_model = str(calibration["small"]) if model else None
        elif model:
            chosen_model = report["recommendation"].get("model")
        if chosen_model is None and chosen_threshold is None:
            raise NotFound(
                f"no model of this run clears the bar {bar:.2f}; nothing to apply", field="bar"
            )
        task = str(report["task"])
        override = await anyio.to_thread.run_sync(
            lambda: self.overrides.apply(
                task=task,
                model=chosen_model,
                threshold=chosen_threshold,
                run_id=run_id,
                actor=actor.id,
            )
        )
        await self.audit.append(
            EvalApplied(
                actor=actor.id,
                role=actor.role,
                source=actor.source,
                target=task,
                details={
                    "run": run_id,
                    "model": chosen_model,
                    # Details hold no floats (their text form is not canonical): per mille.
                    "threshold_permille": (
                        round(chosen_threshold * 1000) if chosen_threshold is not None else None
                    ),
                    "bar_permille": round(bar * 1000),
                },
            ).record()
        )
        return {
            "task": task,
            "model": override.model,
            "threshold": override.threshold,
            "run_id": run_id,
            "bar": bar,
        }

    def routing_overrides(self) -> list[dict[str, Any]]:
        """The overrides in force, by task."""
        return [
            {"task": o.task, "model": o.model, "threshold": o.threshold, "run_id": o.run_id}
            for o in sorted(self.overrides.current().values(), key=lambda o: o.task)
        ]
