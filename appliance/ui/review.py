"""`/review`: the review queue pages for reviewers (staff with the reviewer permission).

Opening an item shows the content the policy kept (the text the model saw and its output);
accepting, correcting and adding to a golden set go through `ReviewQueue`, which audits each.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Template

from appliance.errors import InvalidInput
from appliance.http.reviewer import REVIEWER, as_reviewer
from appliance.review.models import STATUSES
from appliance.review.queue import ReviewQueue
from appliance.ui.common import fragment, render


def _expected_from_form(task: str, data: dict[str, str]) -> Any:
    """A classification's label as typed; other tasks' corrections as a JSON object."""
    if task == "classify":
        return data.get("label", "")
    raw = data.get("expected", "").strip()
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidInput("the correction is nested too deeply", field="expected") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the correction is not valid JSON ({exc.msg} at line {exc.lineno})", field="expected"
        ) from exc


class ReviewPagesController(Controller):
    """The queue, one item, and the decisions on it."""

    include_in_schema = False
    path = "/review"
    opt = REVIEWER

    @get("/")
    async def index(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        status: FromQuery[str] = "pending",
    ) -> Template:
        """The queue: pending items by default, or accepted / corrected / all."""
        queue = review
        shown = None if status == "all" else status
        items = await anyio.to_thread.run_sync(lambda: queue.list_items(status=shown, limit=200))
        counts = await anyio.to_thread.run_sync(queue.counts)
        return render(
            request,
            "review.html",
            items=items,
            counts=counts,
            shown=status,
            statuses=(*STATUSES, "all"),
            threshold=queue.confidence_threshold,
        )

    @get("/{item_id:str}")
    async def item(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
    ) -> Template:
        """One item with its content (opening it is audited)."""
        item = await as_reviewer(
            request, review, lambda q, actor, role: q.open_sync(item_id, actor=actor, role=role)
        )
        return render(request, "review_item.html", entry=item, note=None)

    async def _decision(
        self, request: Request[Any, Any, Any], review: ReviewQueue, item_id: str, note: str
    ) -> Template:
        item = await as_reviewer(
            request,
            review,
            lambda q, actor, role: q.open_sync(item_id, actor=actor, role=role, audit=False),
        )
        return fragment("_review_decision.html", entry=item, note=note)

    @post("/{item_id:str}/accept", status_code=200)
    async def accept(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
    ) -> Template:
        """Accept the output as right."""
        await as_reviewer(
            request, review, lambda q, actor, role: q.accept_sync(item_id, actor=actor, role=role)
        )
        return await self._decision(request, review, item_id, "Accepted.")

    @post("/{item_id:str}/correct", status_code=200)
    async def correct(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
    ) -> Template:
        """Record the right output."""
        expected = _expected_from_form(str(data.get("task", "")), data)
        await as_reviewer(
            request,
            review,
            lambda q, actor, role: q.correct_sync(
                item_id, actor=actor, role=role, expected=expected
            ),
        )
        return await self._decision(request, review, item_id, "Correction saved.")

    @post("/{item_id:str}/golden", status_code=200)
    async def golden(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
        data: URLEncodedBody[dict[str, str]],
    ) -> Template:
        """Append the reviewed item to a golden set."""
        set_name = str(data.get("set_name", ""))
        result = await as_reviewer(
            request,
            review,
            lambda q, actor, role: q.add_to_golden_set_sync(
                item_id, set_name=set_name, actor=actor, role=role
            ),
        )
        return await self._decision(
            request,
            review,
            item_id,
            f"Added to golden set {result['set_name']} (now version {result['version']}).",
        )
