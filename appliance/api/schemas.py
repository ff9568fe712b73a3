"""Request bodies of the REST API. Strict: unknown fields are refused with 422."""

from __future__ import annotations

from typing import Literal

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
