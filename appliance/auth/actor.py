"""Who is asking, as every service sees it: built once here from the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar import Request

from appliance.auth.guards import principal_of

KEY_ACTOR_PREFIX = "apikey:"


class Purpose(StrEnum):
    """Why a request runs: someone waiting on it, a batch item, or an evaluation run.

    An evaluation request is scored against its golden set: it is never queued for review nor
    kept in anyone's history (an admin runs evaluations, and admins do not read content)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"
    EVALUATION = "evaluation"


@dataclass(frozen=True)
class Actor:
    """Who is asking: a user or key id, their role, team, the source address and the purpose.

    Runners store it as a JSON dict (`dataclasses.asdict`) and rebuild it with `Actor(**row)`;
    the purpose comes back as a string and is made a `Purpose` again here."""

    id: str
    role: str
    source: str | None = None
    key_policy: str | None = None
    """Policy bound to the API key, if any: it wins over every other assignment."""
    team: str | None = None
    """A user's team; for a key, its own team, else its owner's."""
    purpose: Purpose = Purpose.INTERACTIVE

    def __post_init__(self) -> None:
        if not isinstance(self.purpose, Purpose):
            object.__setattr__(self, "purpose", Purpose(self.purpose))

    @property
    def key_id(self) -> str | None:
        """The API key id (the target of `policy assign key`), when the caller is a key."""
        if self.id.startswith(KEY_ACTOR_PREFIX):
            return self.id.removeprefix(KEY_ACTOR_PREFIX)
        return None


def actor_for(request: Request[Any, Any, Any]) -> Actor:
    """The authenticated caller: `user:<id>` with its role, or `apikey:<id>` (role `service`),
    with its team (see `Principal.team`)."""
    principal = principal_of(request)
    source = request.client.host if request.client else None
    key_policy = principal.policy if principal.kind == "apikey" else None
    return Actor(
        id=principal.actor_id,
        role=principal.role,
        source=source,
        key_policy=key_policy,
        team=principal.team,
    )
