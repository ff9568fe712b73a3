"""The one path every request takes: policy, PII detection, actions, routing, model, audit.

`types` holds what the path hands around, `routing` picks the model (rules, router, budget,
escalation) and writes usage, `core` is the run skeleton the adapters call.
"""

from appliance.gateway.core import Gateway
from appliance.gateway.types import (
    CHAT_ACTION,
    ChatInput,
    ChatResult,
    ChatStream,
    DetectorHandle,
    EmbeddingResult,
)

__all__ = [
    "CHAT_ACTION",
    "ChatInput",
    "ChatResult",
    "ChatStream",
    "DetectorHandle",
    "EmbeddingResult",
    "Gateway",
]
