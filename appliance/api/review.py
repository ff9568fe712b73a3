"""`/api/v1/review`: the review queue for reviewers (staff accounts with the reviewer permission).

Browser sessions only, never API keys: the queue holds other people's content, and a key an
admin could mint would make the content-blind admin a reader. Every open and decision is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.schemas import error_responses
from appliance.http.reviewer import REVIEWER, as_reviewer
from appliance.review.queue import ReviewQueue


class CorrectionIn(BaseModel):
    """The right output: a label for a classification, a JSON object for other tasks."""

    model_config = ConfigDict(extra="forbid")
    expected: Any


class GoldenIn(BaseModel):
    """The golden set a reviewed item is appended to (it must exist)."""

    model_config = ConfigDict(extra="forbid")
    set_name: str = Field(min_length=1, max_length=200)


class ReviewController(Controller):
    """List, open, accept, correct, and add to a golden set."""

    path = "/api/v1/review"
    tags = ["review"]
    opt = REVIEWER

    @get("/items", summary="Queued items (no content)", responses=error_responses(401, 403, 422))
    async def list_items(
        self,
        review: NamedDependency[ReviewQueue],
        status: FromQuery[str | None] = "pending",
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Items newest first (`status`: pending, accepted, corrected; empty for all)."""
        queue = review
        items = await anyio.to_thread.run_sync(
            lambda: queue.list_items(status=status or None, limit=limit)
        )
        counts = await anyio.to_thread.run_sync(queue.counts)
        return {"items": items, "counts": counts}

    @get(
        "/items/{item_id:str}",
        summary="Open an item (audited)",
        responses=error_responses(401, 403, 404),
    )
    async def open_item(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
    ) -> dict[str, Any]:
        """The item with its content when the policy kept it and it has not expired."""
        return await as_reviewer(
            request, review, lambda q, actor, role: q.open_sync(item_id, actor=actor, role=role)
        )

    @post(
        "/items/{item_id:str}/accept",
        summary="Accept the output as right",
        status_code=200,
        responses=error_responses(401, 403, 404),
    )
    async def accept(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
    ) -> dict[str, Any]:
        """Mark the item accepted (audited)."""
        return await as_reviewer(
            request, review, lambda q, actor, role: q.accept_sync(item_id, actor=actor, role=role)
        )

    @post(
        "/items/{item_id:str}/correct",
        summary="Record the right output",
        status_code=200,
        responses=error_responses(401, 403, 404, 422),
    )
    async def correct(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
        data: JSONBody[CorrectionIn],
    ) -> dict[str, Any]:
        """Store the correction sealed with the item (audited)."""
        return await as_reviewer(
            request,
            review,
            lambda q, actor, role: q.correct_sync(
                item_id, actor=actor, role=role, expected=data.expected
            ),
        )

    @post(
        "/items/{item_id:str}/golden",
        summary="Append to a golden set",
        status_code=200,
        responses=error_responses(401, 403, 404, 422),
    )
    async def add_to_golden_set(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[ReviewQueue],
        item_id: FromPath[str],
        data: JSONBody[GoldenIn],
    ) -> dict[str, Any]:
        """Append the item's input and reviewed output; returns the set's new version."""
        return await as_reviewer(
            request,
            review,
            lambda q, actor, role: q.add_to_golden_set_sync(
                item_id, set_name=data.set_name, actor=actor, role=role
            ),
        )
