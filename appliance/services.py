"""The objects one running app shares: settings, database, policies, detector, models, gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from appliance.audit.store import AuditLog
from appliance.batches.runner import BatchRunner
from appliance.batches.service import Batches
from appliance.config import Settings
from appliance.documents.crypto import Sealer
from appliance.documents.service import Documents, UploadLimits
from appliance.documents.store import DocumentStore
from appliance.eval.overrides import RoutingOverrides
from appliance.eval.runner import EvalRunner
from appliance.eval.service import Evaluation
from appliance.gateway import DetectorHandle, Gateway
from appliance.gateway.routing import build_routing
from appliance.history.store import History
from appliance.inference.base import Backend
from appliance.inference.pulls import ModelPulls
from appliance.inference.registry import Registry
from appliance.pii.keys import load_or_create_key
from appliance.pii.vault import PseudonymVault
from appliance.policies.store import PolicyStore
from appliance.review.queue import ReviewQueue


@dataclass
class Services:
    """Everything a request handler may need, built once per app."""

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
    review: ReviewQueue | None = None
    """The review queue (task outputs below the confidence threshold or failing validation)."""
    evaluation: Evaluation | None = None
    """Golden sets, evaluation runs and the routing overrides applied from them."""
    pulls: ModelPulls | None = None
    """Model pulls on Ollama backends, with their progress (admin)."""
    history: History | None = None
    """Retained content of users' own requests (where the policy keeps it)."""

    @classmethod
    def build(cls, settings: Settings, engine: Engine, backends: list[Backend]) -> Services:
        """Wire the services; loads and validates the policies (a bad file stops start-up)."""
        policies = PolicyStore(engine, default=settings.default_policy)
        policies.import_directory(settings.policies_dir)
        keys = settings.data_dir / "keys"
        vault = PseudonymVault(
            engine,
            key=load_or_create_key(keys / "vault.key"),
            digest_key=load_or_create_key(keys / "vault-digest.key"),
        )
        detector = DetectorHandle()
        registry, routing = build_routing(settings, engine, backends)
        audit = AuditLog.from_settings(settings, engine)
        gateway = Gateway(
            policies=policies,
            detector=detector,
            registry=registry,
            audit=audit,
            vault=vault,
            hash_key=load_or_create_key(keys / "pii-hash.key"),
            default_model=settings.default_model,
            max_tokens=settings.max_tokens,
            max_tokens_limit=settings.max_tokens_limit,
            detector_timeout_s=settings.detector_timeout_s,
            routing=routing,
        )
        sealer = Sealer.from_keys_dir(keys)
        retention = timedelta(hours=settings.document_default_retention_hours)
        documents = Documents(
            store=DocumentStore(engine, sealer),
            audit=audit,
            policies=policies,
            limits=UploadLimits.from_settings(settings),
            default_retention=retention,
        )
        gateway.documents = documents
        review = ReviewQueue(
            engine,
            sealer,
            audit=audit,
            digest_key=gateway.hash_key,
            confidence_threshold=settings.review_confidence_threshold,
        )
        gateway.review = review
        history = History(engine, sealer, audit=audit)
        gateway.history = history
        batches = Batches(engine, sealer, gateway=gateway, default_retention=retention)
        runner = BatchRunner(
            batches,
            concurrency=settings.batch_concurrency,
            pause_s=settings.batch_item_pause_s,
            quiet_s=settings.batch_quiet_s,
        )
        evaluation = Evaluation(
            engine=engine,
            sealer=sealer,
            audit=audit,
            gateway=gateway,
            overrides=routing.overrides or RoutingOverrides(engine),
        )
        evaluation.runner = EvalRunner(evaluation, pause_s=settings.batch_item_pause_s)
        return cls(
            settings,
            engine,
            policies,
            detector,
            registry,
            audit,
            gateway,
            documents,
            batches,
            runner,
            review=review,
            evaluation=evaluation,
            pulls=ModelPulls(registry, audit),
            history=history,
        )
