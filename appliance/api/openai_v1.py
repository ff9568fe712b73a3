"""The OpenAI-compatible API at `/v1`: existing OpenAI clients work by changing the base URL.

A thin adapter over the gateway: the request still passes the PII policy, the router and the
audit trail; the privacy receipt rides in `X-Privacy-Receipt` / `X-Audit-Id` headers and, where
the format has room, in a `privacy_receipt` field.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Response, Stream
from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import InvalidInput
from appliance.gateway import ChatInput, Gateway
from appliance.http.middleware import request_id_of
from appliance.http.receipts import receipt_headers
from appliance.inference.base import Message
from appliance.inference.registry import Registry
from appliance.tasks.schema_limits import check_schema


class OpenAIMessage(BaseModel):
    """A chat message; `content` may be a string or a list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """The message's text; non-text parts are refused (no images or audio here)."""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidInput("only text content parts are supported", field="messages")
            pieces.append(part["text"])
        return "".join(pieces)


class ResponseFormat(BaseModel):
    """`text`, `json_object` or `json_schema` (with its schema)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatCompletionIn(BaseModel):
    """`POST /v1/chat/completions`; unknown OpenAI fields are ignored, unsupported ones refused."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, gt=0, le=8192)
    max_completion_tokens: int | None = Field(default=None, gt=0, le=8192)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    n: int = Field(default=1, ge=1, le=1)
    response_format: ResponseFormat | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[Any] | None = None
    user: str | None = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("tool calling is not supported")
        return value


class EmbeddingsIn(BaseModel):
    """`POST /v1/embeddings`: text input only (token arrays and `dimensions` are refused)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(examples=["Jane Doe's contract renewal"])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > 64:
            raise ValueError("input must hold 1 to 64 texts")
        if any(not text or len(text) > 20_000 for text in texts):
            raise ValueError("each input must be 1 to 20,000 characters")
        return value

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, value: int | None) -> int | None:
        if value is not None:
            raise ValueError("dimensions is not supported: vectors have the model's own size")
        return value


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    """A vector as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def _schema(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    spec = response_format.json_schema or {}
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise InvalidInput("json_schema.schema must be an object", field="response_format")
    check_schema(schema, field="response_format.json_schema.schema")
    return schema


def _model_name(name: str) -> str:
    return name.removesuffix(":latest")


class OpenAIController(Controller):
    """`/v1/models` and `/v1/chat/completions`."""

    path = "/v1"
    tags = ["openai-compatible"]
    opt = access(roles=("staff", "admin"), scopes=("chat",), rate="inference")

    @get("/models", summary="List models (OpenAI format)", sync_to_thread=False)
    def models(self, registry: NamedDependency[Registry]) -> dict[str, Any]:
        """Every model the appliance serves, as OpenAI's model list."""
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": "appliance"}
                for m in registry.models()
            ],
        }

    @post("/chat/completions", status_code=200, summary="Chat completion (OpenAI format)")
    async def chat_completions(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatCompletionIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """Non-streaming JSON or streaming `chat.completion.chunk` server-sent events."""
        chat = ChatInput(
            messages=[
                Message(role="system" if m.role == "developer" else m.role, content=m.text())
                for m in data.messages
            ],
            model=_model_name(data.model),
            max_tokens=data.max_completion_tokens or data.max_tokens,
            temperature=data.temperature or 0.0,
            json_schema=_schema(data.response_format),
        )
        actor, request_id = actor_for(request), request_id_of(request)
        completion_id = f"chatcmpl-{request_id}"
        created = int(time.time())
        if not data.stream:
            result = await gateway.chat(actor, chat, request_id=request_id)
            usage = result.usage
            body = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": result.receipt.get("model") or chat.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.message.content},
                        "finish_reason": _finish(usage.get("finish_reason")),
                    }
                ],
                "usage": {
                    "prompt_tokens": usage.get("prompt_tokens", 0),
                    "completion_tokens": usage.get("completion_tokens", 0),
                    "total_tokens": usage.get("total_tokens", 0),
                },
                "privacy_receipt": result.receipt,
            }
            return Response(body, headers=receipt_headers(result.receipt))

        stream = await gateway.chat_stream(actor, chat, request_id=request_id)
        include_usage = bool((data.stream_options or {}).get("include_usage"))
        model = stream.receipt.get("model") or chat.model

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None)
            async for name, payload in stream.events:
                if name == "delta":
                    yield chunk({"content": payload["content"]}, None)
                elif name == "done":
                    usage = payload["usage"]
                    yield chunk(
                        {}, _finish(usage.get("finish_reason")), privacy_receipt=payload["receipt"]
                    )
                    if include_usage:
                        body: dict[str, Any] = {
                            "id": completion_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": usage.get("prompt_tokens", 0),
                                "completion_tokens": usage.get("completion_tokens", 0),
                                "total_tokens": usage.get("total_tokens", 0),
                            },
                        }
                        yield f"data: {json.dumps(body)}\n\n".encode()
                else:  # error: OpenAI streams carry errors as a data event
                    yield f"data: {json.dumps({'error': _openai_error(payload)})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return Stream(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"} | receipt_headers(stream.receipt),
        )

    @post("/embeddings", status_code=200, summary="Embeddings (OpenAI format)")
    async def embeddings(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmbeddingsIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """Vectors of the policy-transformed inputs; a model that cannot embed gets 422
        naming `model`."""
        texts = [data.input] if isinstance(data.input, str) else data.input
        result = await gateway.embed(
            actor_for(request),
            texts,
            model=_model_name(data.model),
            request_id=request_id_of(request),
        )
        body = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, data.encoding_format)}
                for i, v in enumerate(result.vectors)
            ],
            "model": result.receipt.get("model") or data.model,
            "usage": {
                "prompt_tokens": result.usage["prompt_tokens"],
                "total_tokens": result.usage["total_tokens"],
            },
            "privacy_receipt": result.receipt,
        }
        return Response(body, headers=receipt_headers(result.receipt))


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _openai_error(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": payload.get("message", "error"),
        "type": "invalid_request_error",
        "param": payload.get("field"),
        "code": payload.get("code"),
    }
