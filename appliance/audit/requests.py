"""How many audit rows the request being served has appended, so that every request writes
exactly one: its handler's typed event when it has one, else the HTTP layer's generic row.

The HTTP layer opens a `RequestRows` for each request (`track`); every append to the chain made
while serving it, in the request's task or in a worker thread it started (both copy the
context), is counted on it (`note`), and the outcome and policy of the last one are kept for
the request's line in `/metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any


@dataclass
class RequestRows:
    """The rows one request appended to the trail (a count; the rows say the rest)."""

    count: int = 0
    outcome: str | None = None
    """The last row's outcome (`allowed`, `blocked`, `unauthorized`...)."""
    policy: str | None = None
    """The last row's policy (`name@version`), if it ran under one."""


_CURRENT: ContextVar[RequestRows | None] = ContextVar("audit_request_rows", default=None)


def track() -> tuple[RequestRows, Token[RequestRows | None]]:
    """Start counting the rows of the request being served; reset the token when it is done."""
    rows = RequestRows()
    return rows, _CURRENT.set(rows)


def untrack(token: Token[RequestRows | None]) -> None:
    """Stop counting for the request that `track` returned `token` for."""
    _CURRENT.reset(token)


def note(appended: Sequence[Mapping[str, Any]]) -> None:
    """Count rows appended on behalf of the current request, if one is being served."""
    rows = _CURRENT.get()
    if rows is not None and appended:
        rows.count += len(appended)
        rows.outcome, rows.policy = appended[-1].get("outcome"), appended[-1].get("policy")
