"""Interactive requests first: what counts as interactive traffic, and the item-start wait.

A batch item that holds the cores makes an arriving interactive request wait. The middleware
here tells the process's `InteractiveActivity` (appliance/inference/gate.py) about every
interactive request (every POST except batch and document uploads) from its first byte to its
last, which covers PII detection as well as generation. With that signal:

- the runner starts an item only after `batch_quiet_s` without interactive traffic;
- a background generation already running pauses between its steps while interactive traffic
  is busy (the embedded engine does this; see `yield_to_interactive`);
- at a model's gate an interactive caller goes before a waiting batch item.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from appliance.inference.gate import INTERACTIVE, MAX_DEFER_S, InteractiveActivity

__all__ = ["MAX_DEFER_S", "InteractiveTraffic"]

_NOT_INTERACTIVE = ("/api/v1/batches", "/api/v1/documents")


class InteractiveTraffic:
    """Counts interactive requests into an `InteractiveActivity` (the process's by default)."""

    def __init__(self, activity: InteractiveActivity = INTERACTIVE) -> None:
        self.activity = activity

    async def wait_quiet(self, quiet_s: float) -> float:
        """Wait for `quiet_s` without interactive traffic (bounded); returns seconds waited."""
        if quiet_s <= 0:
            return 0.0
        return await self.activity.wait_quiet(quiet_s)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware that counts interactive requests."""
        activity = self.activity

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
            activity.begin()
            try:
                await app(scope, receive, send)
            finally:
                activity.end()

        return counted
