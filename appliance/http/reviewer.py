"""Who may use the review queue over HTTP, and running a queue step as that reviewer.

Shared by the REST API (`/api/v1/review`) and the review pages (`/review`): both admit only
staff accounts holding the reviewer permission, and both hand the queue the signed-in
reviewer's id and role so that it checks them and audits each step under that actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from litestar import Request

from appliance.auth.guards import principal_of
from appliance.auth.roles import access

Q = TypeVar("Q")
T = TypeVar("T")

REVIEWER = access(roles=("staff",), permission="reviewer")
"""Staff accounts holding the reviewer permission, signed in with a browser session."""


async def as_reviewer(
    request: Request[Any, Any, Any],
    queue: Q,
    step: Callable[[Q, str, str], T],
) -> T:
    """One queue step (`step(queue, actor_id, role)`) off the event loop, as the signed-in
    reviewer: the queue checks the role and audits the step under that actor."""
    principal = principal_of(request)
    return await anyio.to_thread.run_sync(lambda: step(queue, principal.actor_id, principal.role))
