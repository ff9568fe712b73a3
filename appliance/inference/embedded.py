"""The embedded engine as the settings describe it: the bundled models in supervised workers."""

from __future__ import annotations

from appliance.config import Settings
from appliance.inference.bundled import BUNDLED
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.supervisor import BreakerPolicy


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
        background_threads=settings.batch_llama_threads,
        background_quiet_s=settings.batch_quiet_s,
        wrapper=settings.engine_worker_wrapper,
        breaker=BreakerPolicy(
            crashes=settings.engine_crash_limit,
            window_s=settings.engine_crash_window_s,
            cooldown_s=settings.engine_breaker_cooldown_s,
        ),
        start_timeout_s=settings.engine_start_timeout_s,
    )
