"""Ollama, over the official `ollama` Python client (AsyncClient).

The production engine on the box. Ollama reports durations in nanoseconds and token counts as
`prompt_eval_count` / `eval_count` on the final (`done: true`) object of a response; streaming is
NDJSON. Errors arrive as `{"error": "..."}` bodies with an HTTP status, and are mapped into the
error tree here without echoing any prompt text.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import ollama

from appliance.errors import (
    BackendBusy,
    BackendTimeout,
    BackendUnavailable,
    InferenceError,
    InvalidInput,
    ModelNotFound,
)
from appliance.inference.base import (
    Capabilities,
    Delta,
    Generation,
    GenerationRequest,
    Health,
    ModelInfo,
    Tier,
    Usage,
)

T = TypeVar("T")
_NS = 1e-9
BUSY_RETRY_S = 1
"""Seconds a node that answered busy ranks after the others (Ollama sends no Retry-After)."""


@dataclass(frozen=True)
class PullProgress:
    """One progress line of `ollama pull`: a status, and bytes done of total when downloading."""

    status: str
    digest: str | None = None
    completed: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class RunningModel:
    """A model Ollama holds in memory (`/api/ps`)."""

    name: str
    size: int
    size_vram: int
    expires_at: str | None


class OllamaBackend:
    """One Ollama server. Model metadata comes from its `/api/tags` and `/api/show`."""

    capabilities = Capabilities(streaming=True, json_schema=True, embeddings=True)

    def __init__(
        self,
        *,
        host: str,
        name: str = "ollama",
        connect_timeout_s: float = 2.0,
        timeout_s: float = 300.0,
        tier: Tier = "small",
        default_context: int = 2048,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self._tier: Tier = tier
        self._default_context = default_context
        kwargs: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout_s, connect=connect_timeout_s),
        }
        if transport is not None:
            kwargs["transport"] = transport
        self.client = ollama.AsyncClient(host=host, **kwargs)
        self._models: dict[str, ModelInfo] = {}

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self.client._client.aclose()

    # -- discovery -----------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The models found by the last `discover()` (empty until then)."""
        return list(self._models.values())

    async def discover(self) -> list[ModelInfo]:
        """Read `/api/tags`, then `/api/show` for each model's context length and capabilities."""
        listing = await _call(self.client.list)
        found: dict[str, ModelInfo] = {}
        for entry in listing.models:
            name = entry.model or ""
            if not name:
                continue
            context: int = self._default_context
            capabilities: tuple[str, ...] = ()
            try:
                shown = await _call(lambda n=name: self.client.show(n))  # type: ignore[misc]
                info = dict(shown.modelinfo or {})
                context = next(
                    (int(v) for k, v in info.items() if k.endswith(".context_length")),
                    self._default_context,
                )
                capabilities = tuple(shown.capabilities or ())
            except ModelNotFound:
                pass
            details = entry.details.model_dump(exclude_none=True) if entry.details else {}
            found[name] = ModelInfo(
                name=name,
                backend=self.name,
                context_length=context,
                details={"size": entry.size, "digest": entry.digest} | details,
                tier=self._tier,
                capabilities=capabilities,
            )
        self._models = found
        return list(found.values())

    async def running(self) -> list[RunningModel]:
        """Models loaded in memory now (`/api/ps`)."""
        response = await _call(self.client.ps)
        return [
            RunningModel(
                name=m.model or "",
                size=m.size or 0,
                size_vram=m.size_vram or 0,
                expires_at=m.expires_at.isoformat() if m.expires_at else None,
            )
            for m in response.models
        ]

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        """Pull `model`, yielding Ollama's progress lines until `success`."""
        async with _errors():
            stream = await self.client.pull(model, stream=True)
            async for line in stream:
                yield PullProgress(
                    status=line.status or "",
                    digest=line.digest,
                    completed=line.completed,
                    total=line.total,
                )

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One embedding vector per text (`/api/embed`)."""
        response = await _call(lambda: self.client.embed(model=model, input=texts))
        return [list(vector) for vector in response.embeddings]

    async def health(self) -> Health:
        """Healthy when `/api/tags` answers."""
        try:
            listing = await _call(self.client.list)
        except Exception as exc:
            return Health(ok=False, detail=f"{type(exc).__name__}")
        return Health(ok=True, detail=f"{len(listing.models)} models at {self.host}")

    # -- generation ----------------------------------------------------------------------------

    def _chat_args(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": request.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "options": {"num_predict": request.max_tokens, "temperature": request.temperature},
        }
        if request.json_schema is not None:
            args["format"] = request.json_schema
        return args

    async def generate(self, request: GenerationRequest) -> Generation:
        """One `/api/chat` call with `stream: false`."""
        started = time.perf_counter()
        response = await _call(lambda: self.client.chat(**self._chat_args(request), stream=False))
        total = time.perf_counter() - started
        return Generation(
            content=response.message.content or "",
            model=request.model,
            finish_reason=response.done_reason or "stop",
            usage=_usage(response, ttft_s=None, wall_s=total),
        )

    async def generate_text(self, request: GenerationRequest, prompt: str) -> Generation:
        """A raw completion (`/api/generate`), for prompts that are not a conversation."""
        started = time.perf_counter()
        options = {"num_predict": request.max_tokens, "temperature": request.temperature}
        response = await _call(
            lambda: self.client.generate(
                model=request.model,
                prompt=prompt,
                format=request.json_schema,
                options=options,
                stream=False,
            )
        )
        return Generation(
            content=response.response or "",
            model=request.model,
            finish_reason=response.done_reason or "stop",
            usage=_usage(response, ttft_s=None, wall_s=time.perf_counter() - started),
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """`/api/chat` as NDJSON; the `done` object carries counts, durations and the reason."""
        started = time.perf_counter()
        first: float | None = None
        async with _errors():
            parts = await self.client.chat(**self._chat_args(request), stream=True)
            async for part in parts:
                text = part.message.content or ""
                if text:
                    if first is None:
                        first = time.perf_counter() - started
                    yield Delta(content=text)
                if part.done:
                    yield Delta(
                        content="",
                        finish_reason=part.done_reason or "stop",
                        usage=_usage(part, ttft_s=first, wall_s=time.perf_counter() - started),
                    )
                    return
        raise InferenceError("the Ollama stream ended without a final `done` object")


def _usage(part: Any, *, ttft_s: float | None, wall_s: float) -> Usage:
    """Usage from Ollama's counters; its nanosecond durations win over our wall clock."""
    total = part.total_duration * _NS if part.total_duration else wall_s
    prompt_eval = part.prompt_eval_duration * _NS if part.prompt_eval_duration else None
    load = part.load_duration * _NS if part.load_duration else 0.0
    if ttft_s is None:
        ttft_s = (load + prompt_eval) if prompt_eval is not None else total
    return Usage(
        prompt_tokens=int(part.prompt_eval_count or 0),
        completion_tokens=int(part.eval_count or 0),
        ttft_s=ttft_s,
        total_s=total,
    )


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    async with _errors():
        return await fn()
    raise AssertionError("unreachable")  # pragma: no cover - _errors re-raises


@asynccontextmanager
async def _errors() -> AsyncIterator[None]:
    """Ollama's and httpx's exceptions, mapped into the error tree."""
    try:
        yield
    except ollama.ResponseError as exc:
        message = str(exc.error)[:200]
        if exc.status_code == 404:
            raise ModelNotFound(f"Ollama: {message}", field="model") from exc
        if exc.status_code == 400:
            raise InvalidInput(f"Ollama refused the request: {message}") from exc
        if exc.status_code == 429 or (exc.status_code == 503 and "busy" in message):
            # OLLAMA_MAX_QUEUE is full: the node is up, another one may have room.
            raise BackendBusy(f"Ollama is busy: {message}", retry_after=BUSY_RETRY_S) from exc
        if exc.status_code in (502, 503):
            raise BackendUnavailable(f"Ollama is unavailable: {message}") from exc
        raise InferenceError(f"Ollama error ({exc.status_code}): {message}") from exc
    except ConnectionError as exc:  # the client's translation of httpx.ConnectError
        raise BackendUnavailable("cannot connect to Ollama") from exc
    except httpx.ConnectTimeout as exc:
        raise BackendUnavailable("connecting to Ollama timed out") from exc
    except httpx.TimeoutException as exc:
        raise BackendTimeout(f"Ollama timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise BackendUnavailable(f"Ollama transport error ({type(exc).__name__})") from exc
