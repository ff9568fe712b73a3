"""The `Backend` protocol every engine implements, and the messages it exchanges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
Tier = Literal["small", "large", "external"]
"""Where a model sits in the router's ladder: on-prem small, on-prem large, or off-prem."""
TIERS: tuple[Tier, ...] = ("small", "large", "external")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so callers can choose without trying."""

    streaming: bool = False
    json_schema: bool = False
    embeddings: bool = False
    choice_scoring: bool = False
    """The backend can score a closed set of answers (`score_choices`) for a confidence."""


@dataclass(frozen=True)
class GenerationRequest:
    """What the gateway asks a backend to generate. Text here is already policy-transformed."""

    model: str
    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    """Ask for the log-probability of the generated tokens (backends that can report it)."""


@dataclass(frozen=True)
class Usage:
    """Token counts and timings of one generation (seconds)."""

    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        """Decode speed after the first token."""
        decode = self.total_s - self.ttft_s
        return (
            (self.completion_tokens - 1) / decode
            if decode > 0 and self.completion_tokens > 1
            else 0.0
        )


@dataclass(frozen=True)
class Generation:
    """A finished generation."""

    content: str
    model: str
    finish_reason: str
    usage: Usage
    logprob: float | None = None
    """Sum of the generated tokens' log-probabilities, when asked for and reported."""
    node: str | None = None
    """Which node of a balanced pool served it."""


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed generation; the last one carries `usage` and `finish_reason`."""

    content: str
    finish_reason: str | None = None
    usage: Usage | None = None
    node: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model a backend serves."""

    name: str
    backend: str
    context_length: int
    details: dict[str, Any] = field(default_factory=dict)
    tier: Tier = "small"
    capabilities: tuple[str, ...] = ()
    cost_per_hour: float = 0.0
    """On-prem running cost of the node serving the model, in the price table's currency."""


@dataclass(frozen=True)
class Health:
    """Whether a backend answers, and why not."""

    ok: bool
    detail: str
    models: dict[str, str] = field(default_factory=dict)
    """Each model's own state, where the backend knows it (the embedded engine's workers)."""


@runtime_checkable
class Backend(Protocol):
    """An inference engine. Adding one means implementing this in one new module."""

    name: str
    capabilities: Capabilities

    def models(self) -> list[ModelInfo]:
        """The models this backend serves."""
        ...

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate a whole answer."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Generate an answer piece by piece."""
        ...

    async def health(self) -> Health:
        """Check that the backend can serve."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """A backend that can turn texts into embedding vectors (`Capabilities.embeddings`)."""

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


@runtime_checkable
class ChoiceScorer(Protocol):
    """A backend that can score a closed set of answers to the same prompt."""

    async def score_choices(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float]:
        """Log-probability of each choice as the whole answer to `request`'s messages."""
        ...
