"""A task request as the adapters hand it to the gateway, and its finished result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskInput:
    """A task request as the adapters hand it to the gateway."""

    name: str
    text: str | None = None
    document_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    policy: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class TaskResult:
    """A finished task: its typed output, the receipt and usage with both costs."""

    output: dict[str, Any]
    receipt: dict[str, Any]
    usage: dict[str, Any]
