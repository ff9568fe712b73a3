"""The audit trail's background work in a running app: timed checkpoints and daily retention."""

from __future__ import annotations

import logging
import time

import anyio

from appliance.audit.retention import purge
from appliance.audit.store import AuditLog

log = logging.getLogger(__name__)

DAY_S = 86_400.0


async def maintain(audit: AuditLog, *, retention_days: int, tick_s: float | None = None) -> None:
    """Run until cancelled: a checkpoint when `checkpoint_minutes` passed with new events, and,
    when a retention period is set, a purge once a day (the first one a tick after start)."""
    interval = tick_s or min(60.0, audit.checkpoint_interval.total_seconds())
    last_purge: float | None = None
    while True:
        await anyio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(audit.checkpoint_if_due_sync)
            now = time.monotonic()
            if retention_days > 0 and (last_purge is None or now - last_purge >= DAY_S):
                await anyio.to_thread.run_sync(
                    lambda: purge(audit, older_than_days=retention_days, actor="system")
                )
                last_purge = now
        except Exception:
            # The next tick tries again; appends keep checkpointing every N events meanwhile.
            log.error("audit maintenance failed", exc_info=True)
