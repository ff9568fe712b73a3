"""Who is asking, as every service sees it: built once here from the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar import Request

from appliance.auth.guards import principal_of


class Purpose(StrEnum):
    """Why a request runs: someone waiting on it, a batch item, or an evaluation run."""

    INTERACTIVE = "interactive"
    BATCH = "batch"
    EVALUATION = "evaluation"


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user or key id, their role, and the source address."""

    id: str
    role: str
    source: str | None = None
    key_policy: str | None = None
    """Policy bound to the API key, if any: it wins over every other assignment."""
    team: str | None = None
    purpose: Purpose = Purpose.INTERACTIVE


def actor_for(request: Request[Any, Any, Any]) -> Actor:
    """The authenticated caller: `user:<id>` with its role, or `apikey:<id>` (role `service`)."""
    principal = principal_of(request)
    source = request.client.host if request.client else None
    key_policy = principal.policy if principal.kind == "apikey" else None
    return Actor(id=principal.actor_id, role=principal.role, source=source, key_policy=key_policy)


EVAL_REQUEST_PREFIXES = ("eval:", "eval-judge:")
"""Request ids of evaluation runs (`appliance.eval.runner`)."""


def is_evaluation(request_id: str | None) -> bool:
    """Whether a request belongs to an evaluation run: scored against its golden set, it is
    never queued for review nor kept in anyone's history (an admin runs evaluations, and admins
    do not read content)."""
    return (request_id or "").startswith(EVAL_REQUEST_PREFIXES)
