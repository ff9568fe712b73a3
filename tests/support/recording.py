"""A recording wrapper around a real backend: it keeps every request the gateway sends, so tests
can prove what a model received through the backend seam (never through logs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from appliance.inference.base import (
    Backend,
    Delta,
    Generation,
    GenerationRequest,
    Health,
    ModelInfo,
)


class RecordingBackend:
    """Delegates to `inner` (the real embedded engine) and records each request."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.requests: list[GenerationRequest] = []

    def models(self) -> list[ModelInfo]:
        return self.inner.models()

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        return await self.inner.generate(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        return self.inner.stream(request)

    async def health(self) -> Health:
        return await self.inner.health()

    def received_text(self) -> str:
        """Everything any model was sent, joined."""
        return "\n".join(m.content for r in self.requests for m in r.messages)
