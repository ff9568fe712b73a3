"""The composition root: every service of one running app, built once, in dependency order.

Each service receives what it uses through its constructor; none is patched in afterwards. The
domain services reach the request path only through the small protocols they define themselves
(`TaskRunner`, `PolicyRequests`, `DetectorStatus`), which the gateway satisfies. Request
handlers never see the whole `Appliance`: the app registers each service as a dependency of its
own (`dependencies()`), and a handler names the ones it uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

import anyio
from litestar.di import Provide
from sqlalchemy import Engine

from appliance.audit.events import ModelPulled, ModelPullStarted
from appliance.audit.store import AuditLog
from appliance.batches.runner import BatchRunner
from appliance.batches.service import Batches
from appliance.config import Settings
from appliance.db.leases import LeaseTerms, NamedLeases
from appliance.db.pulls import PullRows
from appliance.documents.crypto import Sealer
from appliance.documents.service import Documents, UploadLimits
from appliance.documents.store import DocumentStore
from appliance.eval.overrides import RoutingOverrides
from appliance.eval.service import Evaluation
from appliance.gateway import DetectorHandle, Gateway
from appliance.gateway.routing import build_routing
from appliance.history.store import History
from appliance.inference.base import Backend
from appliance.inference.pulls import ModelPulls, PullAudit, PullEvent
from appliance.inference.registry import Registry
from appliance.pii.keys import load_or_create_key
from appliance.pii.vault import PseudonymVault
from appliance.policies.service import PolicyService
from appliance.policies.store import PolicyStore
from appliance.review.queue import ReviewQueue


@dataclass(frozen=True)
class Appliance:
    """Every service of one app, for the lifespan, the background tasks and the CLI."""

    settings: Settings
    engine: Engine
    policies: PolicyStore
    detector: DetectorHandle
    registry: Registry
    audit: AuditLog
    gateway: Gateway
    documents: Documents
    batches: Batches
    batch_runner: BatchRunner
    review: ReviewQueue
    """The review queue (task outputs below the confidence threshold or failing validation)."""
    evaluation: Evaluation
    """Golden sets, evaluation runs (with their runner) and the routing overrides they set."""
    pulls: ModelPulls
    """Model pulls on Ollama backends, with their progress (admin)."""
    history: History
    """Retained content of users' own requests (where the policy keeps it)."""
    policy_changes: PolicyService
    """Every change of a policy or an assignment, each with its typed audit event."""
    leases: NamedLeases
    """Singleton duties (expiry sweeps, timed checkpoints, retention) that one replica runs at
    a time; batch items, evaluation runs and pulls carry leases of their own."""

    def dependencies(self) -> dict[str, Provide]:
        """Each service as an app-level dependency named like its field (`gateway`,
        `policies`, ...): a handler declares the ones it uses as parameters."""
        return {f.name: _provide(getattr(self, f.name)) for f in fields(self)}


def _provide(value: Any) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def audit_pulls(audit: AuditLog) -> PullAudit:
    """Model pulls' events as audit rows (`model.pull_started`, `model.pulled`)."""

    events = {ModelPullStarted.name: ModelPullStarted, ModelPulled.name: ModelPulled}

    async def record(event: PullEvent, *, only_if: Callable[[Any], bool] | None = None) -> bool:
        entry = events[event.action](
            actor=event.requester.id,
            role=event.requester.role,
            source=event.requester.source,
            outcome=event.outcome,
            model=event.model,
            target=event.target,
            details=dict(event.details),
        ).record()
        if only_if is None:
            await audit.append(entry)
            return True

        def guarded() -> bool:
            # The condition's write and the event commit together, or neither does.
            with audit.transaction() as tx:
                if not only_if(tx.connection):
                    return False
                tx.append(entry)
                return True

        return await anyio.to_thread.run_sync(guarded)

    return record


def build_appliance(settings: Settings, engine: Engine, backends: list[Backend]) -> Appliance:
    """Build every service; loads and validates the policies (a bad file stops start-up)."""
    policies = PolicyStore(engine, default=settings.default_policy)
    policies.import_directory(settings.policies_dir)
    keys = settings.data_dir / "keys"
    vault = PseudonymVault(
        engine,
        key=load_or_create_key(keys / "vault.key"),
        digest_key=load_or_create_key(keys / "vault-digest.key"),
    )
    hash_key = load_or_create_key(keys / "pii-hash.key")
    # One holder id for the process (a row claim adds a random part to it); how long a lease
    # lasts is the `lease_s` setting.
    lease = LeaseTerms(lease_s=settings.lease_s)
    detector = DetectorHandle()
    overrides = RoutingOverrides(engine)
    registry, routing = build_routing(settings, engine, backends, overrides=overrides)
    audit = AuditLog.from_settings(settings, engine)
    sealer = Sealer.from_keys_dir(keys)
    retention = timedelta(hours=settings.document_default_retention_hours)
    documents = Documents(
        store=DocumentStore(engine, sealer),
        audit=audit,
        policies=policies,
        limits=UploadLimits.from_settings(settings),
        default_retention=retention,
    )
    review = ReviewQueue(
        engine,
        sealer,
        audit=audit,
        digest_key=hash_key,
        confidence_threshold=settings.review_confidence_threshold,
    )
    history = History(engine, sealer, audit=audit)
    gateway = Gateway(
        policies=policies,
        detector=detector,
        registry=registry,
        audit=audit,
        vault=vault,
        hash_key=hash_key,
        default_model=settings.default_model,
        max_tokens=settings.max_tokens,
        max_tokens_limit=settings.max_tokens_limit,
        detector_timeout_s=settings.detector_timeout_s,
        routing=routing,
        documents=documents,
        review=review,
        history=history,
        requestable_policies=tuple(settings.requestable_policies),
    )
    batches = Batches(
        engine,
        sealer,
        tasks=routing.tasks,
        policies=policies,
        policy_requests=gateway,
        default_retention=retention,
        lease=lease,
    )
    batch_runner = BatchRunner(
        batches,
        task_runner=gateway,
        detector=detector,
        concurrency=settings.batch_concurrency,
        pause_s=settings.batch_item_pause_s,
        quiet_s=settings.batch_quiet_s,
    )
    evaluation = Evaluation(
        engine=engine,
        sealer=sealer,
        audit=audit,
        policies=policies,
        registry=registry,
        tasks=routing.tasks,
        task_runner=gateway,
        detector=detector,
        overrides=overrides,
        requestable=tuple(settings.requestable_policies),
        pause_s=settings.batch_item_pause_s,
        lease=lease,
    )
    return Appliance(
        settings=settings,
        engine=engine,
        policies=policies,
        detector=detector,
        registry=registry,
        audit=audit,
        gateway=gateway,
        documents=documents,
        batches=batches,
        batch_runner=batch_runner,
        review=review,
        evaluation=evaluation,
        pulls=ModelPulls(registry, audit_pulls(audit), PullRows(engine, lease)),
        history=history,
        policy_changes=PolicyService(policies, audit),
        leases=NamedLeases(engine, lease),
    )
