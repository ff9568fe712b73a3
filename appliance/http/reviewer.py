"""Who may use the review queue over HTTP, and running a queue step as that reviewer.

Shared by the REST API (`/api/v1/review`) and the review pages (`/review`): both admit only
staff accounts holding the reviewer permission, and both hand the queue the signed-in
reviewer's id and role so that it checks them and audits each step under that actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio
from litestar import Request

from appliance.auth.guards import principal_of
from appliance.auth.roles import access
from appliance.errors import NotFound

Q = TypeVar("Q")
Q_co = TypeVar("Q_co", covariant=True)
T = TypeVar("T")

REVIEWER = access(roles=("staff",), permission="reviewer")
"""Staff accounts holding the reviewer permission, signed in with a browser session."""


class HasReviewQueue(Protocol[Q_co]):
    """The app's services, as far as the review routes need them."""

    @property
    def review(self) -> Q_co | None:
        """The review queue, if the app has one."""
        ...


def queue_of(services: HasReviewQueue[Q]) -> Q:
    """The app's review queue."""
    if services.review is None:  # pragma: no cover - every app built by create_app has one
        raise NotFound("the review queue is not configured")
    return services.review


async def as_reviewer(
    request: Request[Any, Any, Any],
    services: HasReviewQueue[Q],
    step: Callable[[Q, str, str], T],
) -> T:
    """One queue step (`step(queue, actor_id, role)`) off the event loop, as the signed-in
    reviewer: the queue checks the role and audits the step under that actor."""
    principal = principal_of(request)
    queue = queue_of(services)
    return await anyio.to_thread.run_sync(lambda: step(queue, principal.actor_id, principal.role))
