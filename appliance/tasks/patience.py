"""Work nobody is waiting on (batch items, evaluation runs) retries what passes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from appliance.errors import BackendBusy, BackendTimeout, BackendUnavailable, DetectorUnavailable

T = TypeVar("T")

TRANSIENT = (BackendBusy, BackendUnavailable, BackendTimeout, DetectorUnavailable)
"""Failures that pass: a busy, down or slow backend, a detector still loading."""


async def patiently(call: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Await `call()`; a transient failure is retried after its `retry_after` (else 1, 2, 3...
    s); the last one is raised."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except TRANSIENT as exc:
            if attempt == attempts:
                raise
            await asyncio.sleep(getattr(exc, "retry_after", None) or attempt)
    raise AssertionError("unreachable")  # pragma: no cover
