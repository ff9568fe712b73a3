"""`POST /api/v1/chat`: a thin adapter over `Gateway.chat` / `Gateway.chat_stream`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Response, ServerSentEvent, ServerSentEventMessage

from appliance.api.schemas import ChatRequestIn, error_responses
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.gateway import ChatInput, Gateway
from appliance.http.middleware import request_id_of
from appliance.http.receipts import receipt_headers
from appliance.inference.base import Message


class ChatController(Controller):
    """Chat completions through the policy path."""

    path = "/api/v1/chat"
    tags = ["chat"]
    opt = access(roles=("staff", "admin"), scopes=("chat",), rate="inference")

    @post(
        "/",
        summary="Chat with a model through the PII policy",
        description=(
            "Detects PII in every message, applies the default policy (identifiers become typed "
            "placeholders such as `<PERSON_1>`), sends the result to the model and returns the "
            "answer with a privacy receipt. With `stream: true` the answer arrives as "
            "server-sent events: `delta` events, then `done` with message, receipt and usage."
        ),
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 413, 422, 429, 503),
    )
    async def chat(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ChatRequestIn],
        gateway: NamedDependency[Gateway],
    ) -> Response[Any]:
        """Run one chat request."""
        chat = ChatInput(
            messages=[Message(role=m.role, content=m.content) for m in data.messages],
            model=data.model,
            max_tokens=data.max_tokens,
            temperature=data.temperature,
            conversation_id=data.conversation_id,
        )
        actor = actor_for(request)
        request_id = request_id_of(request)
        if not data.stream:
            result = await gateway.chat(actor, chat, request_id=request_id)
            return Response(
                {
                    "message": {"role": result.message.role, "content": result.message.content},
                    "receipt": result.receipt,
                    "usage": result.usage,
                },
                headers=receipt_headers(result.receipt),
            )
        stream = await gateway.chat_stream(actor, chat, request_id=request_id)

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            async for name, payload in stream.events:
                yield ServerSentEventMessage(event=name, data=json.dumps(payload))

        return ServerSentEvent(
            events(), headers={"Cache-Control": "no-store"} | receipt_headers(stream.receipt)
        )
