"""Interactive requests first: the batch runner starts an item only when interactive traffic is
quiet.

A batch item that holds the model makes an arriving interactive request wait for the whole item.
The middleware here counts interactive requests in flight (every POST except batch and document
uploads) and when the last one finished; the runner waits for `batch_quiet_s` of silence before
each item, so a person working at the box keeps idle latency while the batch fills the gaps. A
runner kept waiting `MAX_DEFER_S` runs one item anyway, so a busy box still makes progress.
"""

from __future__ import annotations

import asyncio
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

MAX_DEFER_S = 10.0
_NOT_INTERACTIVE = ("/api/v1/batches", "/api/v1/documents")


class InteractiveActivity:
    """Interactive requests in flight, and when the last one ended."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_end = 0.0

    def quiet_for(self) -> float:
        """Seconds since interactive traffic stopped (0 while a request is in flight)."""
        if self.in_flight:
            return 0.0
        return time.monotonic() - self.last_end

    async def wait_quiet(self, quiet_s: float) -> None:
        """Return once nothing interactive ran for `quiet_s`, or after `MAX_DEFER_S` anyway."""
        if quiet_s <= 0:
            return
        deadline = time.monotonic() + MAX_DEFER_S
        while (quiet := self.quiet_for()) < quiet_s and time.monotonic() < deadline:  # noqa: ASYNC110 - a time window, not an event
            await asyncio.sleep(max(0.01, min(quiet_s - quiet, 0.05)))

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware that counts interactive requests."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            path = str(scope.get("path", ""))
            interactive = (
                scope["type"] == ScopeType.HTTP
                and scope.get("method") == "POST"
                and not path.startswith(_NOT_INTERACTIVE)
            )
            if not interactive:
                await app(scope, receive, send)
                return
            self.in_flight += 1
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1
                self.last_end = time.monotonic()

        return counted
