"""The objects one running app shares: settings, database, policies, detector, models, gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from appliance.audit.store import AuditLog, AuditRecord
from appliance.batches.runner import BatchRunner
from appliance.batches.service import Batches
from appliance.config import Settings
from appliance.documents.crypto import Sealer
from appliance.documents.service import Documents, UploadLimits
from appliance.documents.store import DocumentStore
from appliance.gateway import Actor, DetectorHandle, Gateway
from appliance.inference.base import Backend
from appliance.inference.bundled import BUNDLED
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.registry import Registry
from appliance.pii.keys import load_or_create_key
from appliance.pii.vault import PseudonymVault
from appliance.policies.store import PolicyStore
from appliance.tasks.steps import build_routing


def embedded_backend(settings: Settings) -> LlamaCppBackend:
    """The embedded engine serving the bundled models from `models_dir`."""
    models_dir = settings.resolved_models_dir
    return LlamaCppBackend(
        [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED],
        threads=settings.llama_threads,
        context=settings.llama_context,
        queue_size=settings.generation_queue_size,
        retry_after=settings.retry_after_s,
        timeout_s=settings.generation_timeout_s,
    )


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
        batches = Batches(engine, sealer, gateway=gateway, default_retention=retention)
        runner = BatchRunner(
            batches,
            concurrency=settings.batch_concurrency,
            pause_s=settings.batch_item_pause_s,
            quiet_s=settings.batch_quiet_s,
        )
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
        )


async def audit_policy_change(
    services: Services, actor: Actor, action: str, ref: str, **details: str | int
) -> None:
    """Record a policy change (`policy.created`, `.activated`, `.rolled_back`) by `actor`."""
    await services.audit.append(
        AuditRecord(
            actor=actor.id,
            role=actor.role,
            source=actor.source,
            action=action,
            outcome="ok",
            policy=ref,
            target=ref.split("@")[0],
            details=details,
        )
    )
