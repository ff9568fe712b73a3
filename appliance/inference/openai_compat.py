"""Any OpenAI-compatible server, over the official `openai` client.

One module serves llama.cpp's server, vLLM, LM Studio and external frontier APIs: they differ
only in base URL, key and the tier the registry gives them. Retries are off in the client: the
balancer decides where a failed request goes next, and a retry must not hide a dead node.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

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


class OpenAICompatBackend:
    """One OpenAI-compatible endpoint (`base_url` ends in `/v1`)."""

    capabilities = Capabilities(streaming=True, json_schema=True, embeddings=False)

    def __init__(
        self,
        *,
        base_url: str,
        name: str = "openai_compat",
        api_key: str | None = None,
        api_key_env: str | None = None,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 300.0,
        tier: Tier = "small",
        default_context: int = 2048,
        model_aliases: dict[str, str] | None = None,
        structured_output: Literal["json_schema", "json_object"] = "json_schema",
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._tier: Tier = tier
        self._default_context = default_context
        # OpenAI, vLLM and LM Studio take `json_schema`; llama.cpp's Python server only takes
        # `json_object` with a `schema` beside it.
        self._structured_output = structured_output
        # The name the appliance routes by -> the name the server knows the model as.
        self._aliases = dict(model_aliases or {})
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None) or "unused"
        self.client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=key,
            max_retries=0,
            timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
        )
        self._models: dict[str, ModelInfo] = {}

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self.client.close()

    def models(self) -> list[ModelInfo]:
        """The models found by the last `discover()` plus configured aliases."""
        known = dict(self._models)
        for alias in self._aliases:
            known.setdefault(
                alias,
                ModelInfo(
                    name=alias,
                    backend=self.name,
                    context_length=self._default_context,
                    tier=self._tier,
                ),
            )
        return list(known.values())

    async def discover(self) -> list[ModelInfo]:
        """Read the server's `/models` list."""
        async with _errors():
            page = await self.client.models.list()
        self._models = {
            m.id: ModelInfo(
                name=m.id,
                backend=self.name,
                context_length=self._default_context,
                details={"owned_by": m.owned_by},
                tier=self._tier,
            )
            for m in page.data
        }
        return self.models()

    async def health(self) -> Health:
        """Healthy when `/models` answers."""
        try:
            async with _errors():
                page = await self.client.models.list()
        except Exception as exc:
            return Health(ok=False, detail=type(exc).__name__)
        return Health(ok=True, detail=f"{len(page.data)} models at {self.base_url}")

    def _args(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self._aliases.get(request.model, request.model),
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None and self._structured_output == "json_object":
            args["response_format"] = {"type": "json_object", "schema": request.json_schema}
        elif request.json_schema is not None:
            args["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        if request.logprobs:
            args["logprobs"] = True
        return args

    async def generate(self, request: GenerationRequest) -> Generation:
        """One non-streamed chat completion."""
        started = time.perf_counter()
        async with _errors():
            # The client's plain `post`: `chat.completions.create` first walks the arguments
            # against its typed signature, which costs more than the call to a local server.
            response = await self.client.post(
                "/chat/completions", body=self._args(request), cast_to=ChatCompletion
            )
        total = time.perf_counter() - started
        choice = response.choices[0]
        logprob: float | None = None
        if request.logprobs and choice.logprobs is not None and choice.logprobs.content:
            logprob = math.fsum(t.logprob for t in choice.logprobs.content)
        usage = response.usage
        return Generation(
            content=choice.message.content or "",
            model=request.model,
            finish_reason=choice.finish_reason or "stop",
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                ttft_s=total,
                total_s=total,
            ),
            logprob=logprob,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """A streamed chat completion; usage from the server when it sends it, else counted."""
        started = time.perf_counter()
        first: float | None = None
        pieces = 0
        finish = "stop"
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        async with _errors():
            chunks = await self.client.chat.completions.create(**self._args(request), stream=True)
            async for chunk in chunks:
                if chunk.usage is not None:
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason:
                    finish = choice.finish_reason
                text = choice.delta.content if choice.delta else None
                if text:
                    pieces += 1
                    if first is None:
                        first = time.perf_counter() - started
                    yield Delta(content=text)
        total = time.perf_counter() - started
        yield Delta(
            content="",
            finish_reason=finish,
            usage=Usage(
                prompt_tokens=prompt_tokens or 0,
                completion_tokens=completion_tokens if completion_tokens is not None else pieces,
                ttft_s=first if first is not None else total,
                total_s=total,
            ),
        )


@asynccontextmanager
async def _errors() -> AsyncIterator[None]:
    """The client's exceptions, mapped into the error tree (messages never echo prompts)."""
    try:
        yield
    except openai.APITimeoutError as exc:
        raise BackendTimeout("the OpenAI-compatible server timed out") from exc
    except openai.APIConnectionError as exc:
        raise BackendUnavailable("cannot connect to the OpenAI-compatible server") from exc
    except openai.NotFoundError as exc:
        raise ModelNotFound("the server does not serve that model", field="model") from exc
    except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
        raise InvalidInput(f"the server refused the request ({exc.status_code})") from exc
    except openai.RateLimitError as exc:
        # The server is up and says it is full: the balancer tries another node, breaker shut.
        raise BackendBusy(
            "the server is rate limiting requests",
            retry_after=_retry_after(exc.response.headers.get("retry-after")),
        ) from exc
    except openai.APIStatusError as exc:
        if exc.status_code >= 500:
            raise BackendUnavailable(f"the server failed ({exc.status_code})") from exc
        raise InferenceError(f"the server refused the request ({exc.status_code})") from exc


def _retry_after(value: str | None) -> int:
    """The server's `Retry-After` in whole seconds (1 to 60); 1 when absent or a date."""
    return min(max(int(value), 1), 60) if value and value.isdigit() else 1
