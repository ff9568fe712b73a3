"""The audit trail's background work in a running app: timed checkpoints, the integrity check,
and daily retention.

Of several replicas on one database, one does the checkpoints and the retention purge: whichever
holds the named lease `audit.maintenance` (`appliance.db.leases`), renewed at each tick. Both are
safe to run from several replicas at once anyway (each runs in the chain's serialised
transaction and re-reads the latest checkpoint or the oldest event under its lock, so a second
replica finds nothing due), so the lease spares the others the chain's lock every few seconds and
the daily purge, nothing more. The integrity check runs on every replica: each one's `/readyz`
reports its own.
"""

from __future__ import annotations

import logging
import time

import anyio

from appliance.audit.retention import purge
from appliance.audit.store import AuditLog
from appliance.audit.verify import Integrity, check_integrity
from appliance.db.leases import NamedLeases, released

log = logging.getLogger(__name__)

DAY_S = 86_400.0
INTEGRITY_EVERY_S = 60.0
"""How often a running app re-checks the triggers and the chain's tail."""
LEASE = "audit.maintenance"
"""The named lease of the replica that writes timed checkpoints and purges."""


def record_integrity(integrity: Integrity, status: str) -> None:
    """Keep the status `/readyz` reports; a failure is logged loudly, once per change."""
    if status != integrity.status and not status.startswith("ok"):
        log.critical(
            "AUDIT TRAIL INTEGRITY CHECK FAILED: the server is not ready until it is resolved",
            extra={"detail": status[:300]},
        )
    elif status != integrity.status and integrity.status.startswith("failed"):
        log.warning("audit trail integrity restored")
    integrity.status = status


async def maintain(
    audit: AuditLog,
    *,
    retention_days: int,
    tick_s: float | None = None,
    integrity: Integrity | None = None,
    witness_setting: str = "",
    leases: NamedLeases | None = None,
) -> None:
    """Run until cancelled: a checkpoint once `checkpoint_minutes` passed with new events
    (looked for every few seconds, so the interval holds to within a tick), the integrity
    check every minute, and, when a retention period is set, a purge once a day. With `leases`,
    checkpoints and purges only while this process holds `audit.maintenance`."""
    interval = tick_s or min(5.0, max(audit.checkpoint_interval.total_seconds() / 6, 0.5))
    last_purge: float | None = None
    last_check = time.monotonic()
    try:
        while True:
            await anyio.sleep(interval)
            try:
                held = leases is None or await anyio.to_thread.run_sync(leases.take, LEASE)
                if held:
                    await anyio.to_thread.run_sync(audit.checkpoint_if_due_sync)
                else:
                    last_purge = None  # the holder purges; should we take over, purge at once
                now = time.monotonic()
                if integrity is not None and now - last_check >= INTEGRITY_EVERY_S:
                    last_check = now
                    status = await anyio.to_thread.run_sync(
                        lambda: check_integrity(audit, witness_setting=witness_setting)
                    )
                    record_integrity(integrity, status)
                due = last_purge is None or now - last_purge >= DAY_S
                if held and retention_days > 0 and due:
                    await anyio.to_thread.run_sync(
                        lambda: purge(audit, older_than_days=retention_days, actor="system")
                    )
                    last_purge = now
            except Exception:
                # The next tick tries again; appends keep checkpointing every N events meanwhile.
                log.error("audit maintenance failed", exc_info=True)
    finally:
        if leases is not None:
            await released(lambda: leases.release(LEASE), what=LEASE)
