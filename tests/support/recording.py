"""A recording wrapper around a real backend: it keeps every request the gateway sends, so tests
can prove what a model received through the backend seam (never through logs)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

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
        self.outputs: list[str] = []
        """What the model really produced, before the gateway scanned it."""
        self.embedded: list[list[str]] = []
        """The texts of each embeddings request, as the model received them."""
        self.choices: list[list[str]] = []
        """The closed answers of each constrained-choice scoring (classify labels)."""

    def models(self) -> list[ModelInfo]:
        return self.inner.models()

    def start(self) -> None:
        """Start the inner engine's workers, as the app does at start-up."""
        start = getattr(self.inner, "start", None)
        if start is not None:
            start()

    async def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        generation = await self.inner.generate(request)
        self.outputs.append(generation.content)
        return generation

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        self.outputs.append("")
        index = len(self.outputs) - 1
        inner = self.inner.stream(request)
        try:
            async for delta in inner:
                self.outputs[index] += delta.content
                yield delta
        finally:
            await inner.aclose()  # type: ignore[attr-defined]  (frees the model at once)

    async def health(self) -> Health:
        return await self.inner.health()

    def admission_gates(self) -> list[Any]:
        """The inner engine's gates, so `/metrics` reports its queues through the wrapper."""
        return list(self.inner.admission_gates())  # type: ignore[attr-defined]

    def model_states(self) -> dict[str, str]:
        """The inner engine's worker states, for `/metrics` through the wrapper."""
        return self.inner.model_states()  # type: ignore[attr-defined, no-any-return]

    async def score_choices(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float]:
        """Constrained-choice scoring, recorded like a generation."""
        self.requests.append(request)
        self.choices.append(list(choices))
        return await self.inner.score_choices(request, choices)  # type: ignore[attr-defined, no-any-return]

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Embeddings, recorded (the inner backend must be able to embed)."""
        self.embedded.append(list(texts))
        return await self.inner.embed(model, texts)  # type: ignore[attr-defined, no-any-return]

    def received_text(self) -> str:
        """Everything any model was sent, joined."""
        return "\n".join(m.content for r in self.requests for m in r.messages)

    def received_everything(self) -> str:
        """Every byte any model could read: messages, structured-output schemas (they become
        grammars), scoring choices and embedding inputs."""
        schemas = [json.dumps(r.json_schema) for r in self.requests if r.json_schema is not None]
        choices = [c for group in self.choices for c in group]
        embedded = [t for group in self.embedded for t in group]
        return "\n".join([self.received_text(), *schemas, *choices, *embedded])
