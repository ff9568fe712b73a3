"""The Ollama-compatible API at `/ollama`: Ollama clients work with `host=.../ollama`.

Chat and generate go through the gateway like every other request (policy, router, audit);
streams are NDJSON as Ollama sends them, with durations in nanoseconds. The privacy receipt
rides in the headers and in a `privacy_receipt` field of the final object.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Response, Stream
from pydantic import BaseModel, ConfigDict, Field

from appliance import __version__
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import InvalidInput, ModelNotFound
from appliance.gateway import ChatInput, Gateway
from appliance.http.middleware import request_id_of
from appliance.http.receipts import receipt_headers
from appliance.inference.base import Message
from appliance.inference.registry import Registry
from appliance.tasks.schema_limits import check_schema

OLLAMA_API_VERSION = "0.6.0"


class OllamaMessage(BaseModel):
    """One chat message (images are not accepted)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class OllamaOptions(BaseModel):
    """The options the appliance honours; others are ignored as Ollama ignores unknown ones."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    num_predict: int | None = Field(default=None, gt=0, le=8192)


class OllamaChatIn(BaseModel):
    """`POST /ollama/api/chat`."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[OllamaMessage] = Field(min_length=1, max_length=200)
    stream: bool = True
    format: Literal["json"] | dict[str, Any] | None = None
    options: OllamaOptions | None = None


class OllamaGenerateIn(BaseModel):
    """`POST /ollama/api/generate`."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field(min_length=1)
    system: str | None = None
    stream: bool = True
    format: Literal["json"] | dict[str, Any] | None = None
    options: OllamaOptions | None = None


class OllamaShowIn(BaseModel):
    """`POST /ollama/api/show`."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)


class OllamaEmbedIn(BaseModel):
    """`POST /ollama/api/embed`: `input` is one text or a list of texts."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str]
    truncate: bool = True

    def texts(self) -> list[str]:
        """The inputs as a list; empty or oversized inputs are refused naming `input`."""
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts or len(texts) > 64 or any(not t or len(t) > 20_000 for t in texts):
            raise InvalidInput(
                "input must be 1 to 64 texts of 1 to 20,000 characters", field="input"
            )
        return texts


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _name(model: str) -> str:
    return model.removesuffix(":latest")


def _schema(fmt: Literal["json"] | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None:
        return None
    if fmt == "json":
        return {"type": "object"}
    check_schema(fmt, field="format")
    return fmt


def _final(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    total_ns = int(float(usage.get("total_ms", 0)) * 1e6)
    first_ns = int(float(usage.get("ttft_ms", 0)) * 1e6)
    return {
        "model": model,
        "created_at": _now(),
        "done": True,
        "done_reason": "length" if usage.get("finish_reason") == "length" else "stop",
        "total_duration": total_ns,
        "load_duration": 0,
        "prompt_eval_count": usage.get("prompt_tokens", 0),
        "prompt_eval_duration": first_ns,
        "eval_count": usage.get("completion_tokens", 0),
        "eval_duration": max(total_ns - first_ns, 0),
    }


class OllamaController(Controller):
    """`/ollama/api/...`: chat, generate, tags, show, version."""

    path = "/ollama/api"
    tags = ["ollama-compatible"]
    opt = access(roles=("staff", "admin"), scopes=("chat",), rate="inference")

    async def _run(
        self,
        request: Request[Any, Any, Any],
        gateway: Gateway,
        *,
        model: str,
        messages: list[Message],
        stream: bool,
        fmt: Any,
        options: OllamaOptions | None,
        key: Literal["message", "response"],
    ) -> Response[Any]:
        chat = ChatInput(
            messages=messages,
            model=_name(model),
            max_tokens=options.num_predict if options else None,
            temperature=(options.temperature if options and options.temperature else 0.0),
            json_schema=_schema(fmt),
        )
        actor, request_id = actor_for(request), request_id_of(request)

        def piece(text: str) -> Any:
            return {"role": "assistant", "content": text} if key == "message" else text

        if not stream:
            result = await gateway.chat(actor, chat, request_id=request_id)
            body = _final(model, result.usage) | {
                key: piece(result.message.content),
                "privacy_receipt": result.receipt,
            }
            return Response(body, headers=receipt_headers(result.receipt))

        events = await gateway.chat_stream(actor, chat, request_id=request_id)

        async def lines() -> AsyncIterator[bytes]:
            async for name, payload in events.events:
                if name == "delta":
                    line = {
                        "model": model,
                        "created_at": _now(),
                        key: piece(payload["content"]),
                        "done": False,
                    }
                elif name == "done":
                    line = _final(model, payload["usage"]) | {
                        key: piece(""),
                        "privacy_receipt": payload["receipt"],
                    }
                else:
                    line = {"error": payload.get("message", "error")}
                yield (json.dumps(line) + "\n").encode()

        return Stream(
            lines(),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store"} | receipt_headers(events.receipt),
        )

    @post("/chat", status_code=200, summary="Chat (Ollama format)")
    async def chat(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OllamaChatIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """NDJSON stream by default (`stream: false` for one object), as Ollama does."""
        messages = [Message(role=m.role, content=m.content) for m in data.messages]
        return await self._run(
            request,
            gateway,
            model=data.model,
            messages=messages,
            stream=data.stream,
            fmt=data.format,
            options=data.options,
            key="message",
        )

    @post("/generate", status_code=200, summary="Generate (Ollama format)")
    async def generate(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OllamaGenerateIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """A prompt (and optional system text) as one user turn."""
        messages = ([Message("system", data.system)] if data.system else []) + [
            Message("user", data.prompt)
        ]
        return await self._run(
            request,
            gateway,
            model=data.model,
            messages=messages,
            stream=data.stream,
            fmt=data.format,
            options=data.options,
            key="response",
        )

    @get("/tags", summary="List models (Ollama format)", sync_to_thread=False)
    def tags_(self, registry: NamedDependency[Registry]) -> dict[str, Any]:
        """The models, as `/api/tags` lists them."""
        return {
            "models": [
                {
                    "name": f"{m.name}:latest",
                    "model": f"{m.name}:latest",
                    "modified_at": "1970-01-01T00:00:00Z",
                    "size": int(m.details.get("size", 0) or 0),
                    "digest": str(m.details.get("sha256", "")),
                    "details": {
                        "format": "gguf",
                        "family": m.name.split("-")[0],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
                for m in registry.models()
            ]
        }

    @post("/show", status_code=200, summary="Show a model (Ollama format)")
    async def show(
        self, data: JSONBody[OllamaShowIn], registry: NamedDependency[Registry]
    ) -> dict[str, Any]:
        """A model's details; unknown names are a 404 as in Ollama."""
        name = _name(data.model)
        if name not in registry.names():
            raise ModelNotFound(
                f"model '{data.model}' not found",
                field="model",
                available=registry.names(),
            )
        info = next(m for m in registry.models() if m.name == name)
        return {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": {"format": "gguf", "family": name.split("-")[0]},
            "model_info": {"context_length": info.context_length, "backend": info.backend},
        }

    @post("/embed", status_code=200, summary="Embeddings (Ollama format)")
    async def embed(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[OllamaEmbedIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """Vectors of the policy-transformed inputs, through the same gateway path as `/v1`."""
        result = await gateway.embed(
            actor_for(request),
            data.texts(),
            model=_name(data.model),
            request_id=request_id_of(request),
        )
        seconds = float(result.usage.get("total_ms", 0) or 0) / 1000
        body = {
            "model": data.model,
            "embeddings": result.vectors,
            "total_duration": int(seconds * 1e9),
            "load_duration": 0,
            "prompt_eval_count": result.usage["prompt_tokens"],
            "privacy_receipt": result.receipt,
        }
        return Response(body, headers=receipt_headers(result.receipt))

    @get("/version", summary="Version (Ollama format)", sync_to_thread=False)
    def version(self) -> dict[str, str]:
        """The Ollama API version this endpoint speaks, and the appliance's own."""
        return {"version": OLLAMA_API_VERSION, "appliance": __version__}
