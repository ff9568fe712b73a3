"""Request bodies of the REST API. Strict: unknown fields are refused with 422."""

from __future__ import annotations

from typing import Literal

from litestar.openapi.datastructures import ResponseSpec
from pydantic import BaseModel, ConfigDict, Field


class ChatMessageIn(BaseModel):
    """One message of a chat request."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=200_000)


class ChatRequestIn(BaseModel):
    """`POST /api/v1/chat`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "messages": [
                        {"role": "user", "content": "Draft a reply to Jane Doe (jane@example.org)."}
                    ],
                    "model": "smollm2-135m",
                    "stream": False,
                }
            ]
        },
    )

    messages: list[ChatMessageIn] = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, gt=0, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    conversation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Keeps pseudonyms stable across the requests of one conversation, when the "
        "policy scopes them per conversation.",
    )


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message, and the field at fault when there is one."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every REST error: `{"error": {"code", "message", "field"?}}`."""

    error: ErrorDetail


_STATUS_TEXT = {
    400: "The body is not valid JSON (`malformed_body`).",
    401: "No valid credentials.",
    403: "The credentials do not allow this route.",
    404: "A named model, policy or object does not exist.",
    413: "The body is larger than `max_body_bytes`.",
    422: "A field is invalid (`field` names it), or the policy blocked the request "
    "(`pii_blocked`, with a receipt).",
    429: "Rate limited; `Retry-After` says when to retry.",
    503: "PII detection unavailable (fail closed) or the model's queue is full (`Retry-After`).",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_STATUS_TEXT[status], generate_examples=False
        )
        for status in statuses
    }
