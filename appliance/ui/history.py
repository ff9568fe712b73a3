"""`/history`: the caller's own requests as receipts, their retained content, re-run and delete.

Receipts come from the audit trail (counts and decisions, never text). Content exists only where
the request's policy retains it (`appliance.history.store`: sealed at rest, expiring); the owner
can open it, re-run it through the gateway exactly as the workspace would, or delete it. The
caller's own documents are listed too and deleted through the documents API.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from appliance.audit.export import EventFilter, list_events
from appliance.audit.store import AuditLog
from appliance.auth.actor import actor_for
from appliance.auth.roles import access
from appliance.documents.service import Documents
from appliance.errors import ApplianceError
from appliance.gateway import ChatInput, Gateway
from appliance.history.store import History
from appliance.http.middleware import request_id_of
from appliance.inference.base import Message
from appliance.policies.store import PolicyStore
from appliance.tasks.types import TaskInput
from appliance.ui.common import STAFF_ROLES, fragment, render

COMPLETIONS = "completion.*"
"""Every request through the gateway is audited as one `completion.<outcome>` event."""

_TEXT_FIELD = {"summarize": "summary", "ask": "answer", "redact": "text", "chat": "reply"}


def shown(task: str, output: Any) -> str:
    """An answer as the history shows it: the text of text tasks, JSON otherwise."""
    if isinstance(output, str):
        return output
    if isinstance(output, dict) and task in _TEXT_FIELD:
        return str(output.get(_TEXT_FIELD[task], ""))
    if isinstance(output, dict) and task == "classify":
        return f"{output.get('label')} (confidence {float(output.get('confidence', 0)):.2f})"
    return json.dumps(output, indent=2, ensure_ascii=False)


class HistoryPagesController(Controller):
    """The history page and its partials; every route acts on the caller's own entries only."""

    include_in_schema = False
    path = "/history"
    opt = access(roles=STAFF_ROLES)

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        documents: NamedDependency[Documents],
        audit: NamedDependency[AuditLog],
        policies: NamedDependency[PolicyStore],
        history: NamedDependency[History],
    ) -> Template:
        """Receipts, newest first, with the content still retained; and the caller's documents."""
        actor = actor_for(request)
        owned = [d.public() for d in await documents.owned(actor)]

        def load() -> tuple[list[dict[str, Any]], dict[str, Any]]:
            rows = list_events(
                audit.engine, EventFilter(actor=actor.id, action=COMPLETIONS), limit=100
            )
            return rows, history.retained_ids(actor.id)

        rows, retained = await anyio.to_thread.run_sync(load)
        retention = {name: policies.get(name).policy.retention for name in policies.names()}
        return render(
            request,
            "history.html",
            rows=rows,
            retained={k: v.isoformat() for k, v in retained.items()},
            retention=retention,
            documents=owned,
        )

    @get("/{entry_id:str}")
    async def entry(
        self,
        request: Request[Any, Any, Any],
        entry_id: FromPath[str],
        history: NamedDependency[History],
    ) -> Template:
        """The retained content of one of the caller's requests (decrypted for its owner)."""
        owner = actor_for(request).id
        kept = await anyio.to_thread.run_sync(history.open, owner, entry_id)
        return render(
            request,
            "history_entry.html",
            kept=kept,
            answer=shown(kept.task, kept.output),
            params=json.dumps(kept.params, indent=2, ensure_ascii=False) if kept.params else "",
        )

    @post("/{entry_id:str}/rerun", status_code=200)
    async def rerun(
        self,
        request: Request[Any, Any, Any],
        entry_id: FromPath[str],
        history: NamedDependency[History],
        gateway: NamedDependency[Gateway],
    ) -> Template:
        """Run the retained request again through the gateway (policy, PII, model, audit)."""
        actor = actor_for(request)
        kept = await anyio.to_thread.run_sync(history.open, actor.id, entry_id)
        request_id = request_id_of(request)
        try:
            if kept.task == "chat":
                chat = ChatInput(messages=[Message(role="user", content=kept.text)], task="chat")
                result = await gateway.chat(actor, chat, request_id=request_id)
                answer, receipt, usage = result.message.content, result.receipt, result.usage
            else:
                # The policy the request ran under (its active version now), not the caller's
                # default: a request sent under a stricter policy stays under it.
                task = TaskInput(
                    name=kept.task,
                    text=kept.text,
                    params=dict(kept.params),
                    policy=kept.policy.partition("@")[0],
                )
                done = await gateway.run_task(actor, task, request_id=request_id)
                answer, receipt, usage = shown(kept.task, done.output), done.receipt, done.usage
        except ApplianceError as exc:
            found = exc.extra.get("receipt")
            if not isinstance(found, dict):
                raise
            return fragment(
                "_history_rerun.html", answer=None, error=exc.message, r=found, usage={}
            )
        return fragment("_history_rerun.html", answer=answer, error=None, r=receipt, usage=usage)

    @post("/{entry_id:str}/delete", status_code=200)
    async def delete(
        self,
        request: Request[Any, Any, Any],
        entry_id: FromPath[str],
        history: NamedDependency[History],
    ) -> Template:
        """Delete the retained content of one of the caller's requests; its receipt stays."""
        actor = actor_for(request)
        await history.delete(actor.id, entry_id, role=actor.role, source=actor.source)
        return fragment("_history_content.html", entry_id=entry_id, deleted=True)
