"""The staff workspace: paste text, preview what the policy will do, run a task, see the receipt.

Handlers are thin over the gateway: the preview is `Gateway.analyze`, a chat streams from
`Gateway.chat_stream`, every other task runs through `Gateway.run_task`. Results reach the
browser as server-sent events that `static/app.js` reads: `delta` (text), `receipt` (rendered
HTML), `done` (the result to copy or download) or `error` (a rendered toast).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import URLEncodedBody
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template

from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.errors import ApplianceError, InvalidInput
from appliance.gateway import ChatInput, Gateway
from appliance.http.middleware import request_id_of
from appliance.inference.base import Message
from appliance.tasks.runner import progress_hook
from appliance.tasks.types import TaskInput
from appliance.ui.common import STAFF_ROLES, fragment, render
from appliance.ui.highlight import ACTION_HELP, ACTIONS, preview

COMPLETIONS = "completion.*"
"""Every request through the gateway is audited as one `completion.<outcome>` event."""

TASKS = ("summarize", "extract", "classify", "redact", "ask", "chat")
"""The tasks the workspace offers, in menu order."""

SCHEMA_PRESETS = {
    "parties": {
        "type": "object",
        "properties": {"parties": {"type": "array", "items": {"type": "string"}}},
        "required": ["parties"],
    },
    "dates": {
        "type": "object",
        "properties": {"dates": {"type": "array", "items": {"type": "string"}}},
        "required": ["dates"],
    },
    "contact": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "role": {"type": "string"}},
        "required": ["name"],
    },
}
"""Schemas staff can pick for `extract` without writing JSON (the field stays editable)."""

_TEXT_FIELD = {"summarize": "summary", "ask": "answer", "redact": "text", "chat": "reply"}


def task_params(task: str, form: dict[str, str]) -> dict[str, Any]:
    """The task's parameters from the workspace form; a bad field names itself."""
    if task not in TASKS:
        raise InvalidInput(f"unknown task '{task}'", field="task")
    if task == "extract":
        raw = form.get("schema", "").strip()
        try:
            schema = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"the schema is not valid JSON (line {exc.lineno}: {exc.msg})", field="schema"
            ) from exc
        return {"schema": schema}
    if task == "classify":
        labels = [p.strip() for p in form.get("labels", "").split(",") if p.strip()]
        return {"labels": labels}
    if task == "ask":
        return {"question": form.get("question", "").strip()}
    return {}


def _sse(event: str, data: Any) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=json.dumps(data))


def _render(request: Request[Any, Any, Any], name: str, **context: Any) -> str:
    engine = request.app.template_engine
    assert engine is not None
    return str(engine.get_template(name).render(**context))


def output_text(task: str, output: dict[str, Any]) -> str:
    """A task's output as the answer pane shows it."""
    if task in _TEXT_FIELD:
        return str(output.get(_TEXT_FIELD[task], ""))
    if task == "classify":
        return f"{output.get('label')} (confidence {float(output.get('confidence', 0)):.2f})"
    return json.dumps(output, indent=2, ensure_ascii=False)


async def reporting(run: Callable[[], Awaitable[Any]]) -> AsyncIterator[tuple[str, Any]]:
    """Run `run()` in its own task with the task runner's progress hook set: yields
    `("progress", {stage, done, total})` as the work advances (chunked summaries), then
    `("result", value)`. The work's exception is raised here; closing the stream cancels it."""
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)

    def hook(stage: str, done: int, total: int) -> None:
        send.send_nowait({"stage": stage, "done": done, "total": total})

    async def work() -> Any:
        progress_hook.set(hook)  # this task's own context: other requests never see it
        try:
            return await run()
        finally:
            send.close()

    task = asyncio.ensure_future(work())
    try:
        async with receive:
            async for item in receive:
                yield "progress", item
        yield "result", await task
    finally:
        if not task.done():
            task.cancel()


class WorkspaceController(Controller):
    """Pages and partials of the staff workspace."""

    include_in_schema = False
    opt = access(roles=STAFF_ROLES)

    @get("/workspace", sync_to_thread=False)
    def workspace(self, request: Request[Any, Any, Any]) -> Template:
        """The workspace page; `?task=` preselects a task (re-run from history)."""
        chosen = request.query_params.get("task", "summarize")
        return render(
            request,
            "workspace.html",
            tasks=TASKS,
            chosen=chosen if chosen in TASKS else "summarize",
            presets={k: json.dumps(v, indent=2) for k, v in SCHEMA_PRESETS.items()},
        )

    @post("/workspace/preview", status_code=200)
    async def preview(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[dict[str, str]],
        gateway: NamedDependency[Gateway],
    ) -> Template:
        """What the policy finds in the text and what it will do with each value."""
        text = data.get("text", "")
        if not text.strip():
            return fragment("_preview.html", empty=True)
        policy, items, _ = await gateway.analyze(
            actor_for(request), text, request_id=request_id_of(request)
        )
        return fragment(
            "_preview.html",
            empty=False,
            policy=policy,
            view=preview(text, items),
            actions=ACTIONS,
            action_help=ACTION_HELP,
        )

    @post("/workspace/run", status_code=200)
    async def run(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[dict[str, str]],
        gateway: NamedDependency[Gateway],
    ) -> ServerSentEvent:
        """Run the chosen task; the answer and its receipt arrive as server-sent events."""
        task = data.get("task", "")
        text = data.get("text", "")
        actor = actor_for(request)
        request_id = request_id_of(request)

        def receipt(body: dict[str, Any], usage: dict[str, Any] | None = None) -> Any:
            return _sse("receipt", _render(request, "_receipt.html", r=body, usage=usage or {}))

        def failure(message: str, found: Any) -> Any:
            return _sse(
                "error",
                {
                    "toast": _render(request, "_toast.html", message=message, level="error"),
                    "receipt": _render(request, "_receipt.html", r=found, usage={})
                    if isinstance(found, dict)
                    else "",
                },
            )

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            try:
                params = task_params(task, data)
                if not text.strip():
                    raise InvalidInput("paste a text first", field="text")
                if task == "chat":
                    chat = ChatInput(messages=[Message(role="user", content=text)], task="chat")
                    stream = await gateway.chat_stream(actor, chat, request_id=request_id)
                    yield receipt(stream.receipt)
                    async for name, payload in stream.events:
                        if name == "delta":
                            yield _sse("delta", {"content": payload["content"]})
                        elif name == "done":
                            yield receipt(payload["receipt"], payload.get("usage"))
                            content = payload["message"]["content"]
                            yield _sse("done", {"text": content, "json": None})
                        else:
                            yield failure(str(payload.get("message")), payload.get("receipt"))
                    return
                run = TaskInput(name=task, text=text, params=params)
                result: Any = None
                async for kind, value in reporting(
                    lambda: gateway.run_task(actor, run, request_id=request_id)
                ):
                    if kind == "progress":
                        yield _sse("progress", value)
                    else:
                        result = value
            except ApplianceError as exc:
                yield failure(exc.message, exc.extra.get("receipt"))
                return
            shown = output_text(task, result.output)
            yield _sse("delta", {"content": shown})
            yield receipt(result.receipt, result.usage)
            yield _sse(
                "done", {"text": shown, "json": result.output if task == "extract" else None}
            )

        return ServerSentEvent(events(), headers={"Cache-Control": "no-store"})
