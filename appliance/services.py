"""The objects one running app shares: settings, database, policies, detector, models, gateway."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from appliance.audit.store import AuditLog
from appliance.config import Settings
from appliance.gateway import DetectorHandle, Gateway
from appliance.inference.base import Backend
from appliance.inference.bundled import BUNDLED
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.registry import Registry
from appliance.policies.loader import PolicyStore


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

    @classmethod
    def build(cls, settings: Settings, engine: Engine, backends: list[Backend]) -> Services:
        """Wire the services; loads and validates the policies (a bad file stops start-up)."""
        policies = PolicyStore.from_directory(
            settings.policies_dir, default=settings.default_policy
        )
        detector = DetectorHandle()
        registry = Registry(backends)
        audit = AuditLog(engine)
        gateway = Gateway(
            policies=policies,
            detector=detector,
            registry=registry,
            audit=audit,
            default_model=settings.default_model,
            max_tokens=settings.max_tokens,
            detector_timeout_s=settings.detector_timeout_s,
        )
        return cls(settings, engine, policies, detector, registry, audit, gateway)
