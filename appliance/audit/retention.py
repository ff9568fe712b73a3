"""Retention: remove events older than N days while the rest of the chain still verifies.

In one serialised transaction the purge signs an `anchor` checkpoint of the last event it
removes (the event the first remaining one links to), opens the purge gate the append-only
triggers look for, deletes the prefix, closes the gate, and appends `audit.purged`. Other
transactions never see the gate open. The anchor is also sent to the witness.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection, func, select

from appliance.audit.chain import canonical_time
from appliance.audit.checkpoints import Checkpoint
from appliance.audit.events import AuditPurged
from appliance.audit.store import EVENTS_TABLE, AuditLog, Head, validate

PURGE_GATE = sa.table("audit_purge_gate", sa.column("upto_seq", sa.BigInteger()))


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed: how many events, up to which seq, and its anchor and event."""

    purged: int
    through_seq: int | None
    anchor: Checkpoint | None
    event_id: str | None


def purge(
    audit: AuditLog,
    *,
    older_than_days: int,
    actor: str = "system",
    role: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> PurgeResult:
    """Remove the oldest events, up to the first one not older than `older_than_days`."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    columns = EVENTS_TABLE.c

    def work(connection: Connection) -> tuple[PurgeResult, list[Checkpoint]]:
        first = connection.execute(select(func.min(columns.seq))).scalar()
        if first is None:
            return PurgeResult(0, None, None, None), []
        # A prefix only: stop before the first event that must stay, even if a later one has an
        # older time (a clock stepped back), so the chain left behind has no hole.
        keep = connection.execute(select(func.min(columns.seq)).where(columns.time >= cutoff))
        first_kept = keep.scalar()
        if first_kept is None:
            first_kept = int(connection.execute(select(func.max(columns.seq))).scalar_one()) + 1
        through = int(first_kept) - 1
        if through < first:
            return PurgeResult(0, None, None, None), []
        head_hash = connection.execute(
            select(columns.hash).where(columns.seq == through)
        ).scalar_one()
        anchor = audit.sign_checkpoint(connection, Head(through, str(head_hash)), kind="anchor")
        connection.execute(PURGE_GATE.insert().values(upto_seq=through))
        connection.execute(EVENTS_TABLE.delete().where(columns.seq <= through))
        connection.execute(PURGE_GATE.delete())
        purged = through - int(first) + 1
        row = validate(
            AuditPurged(
                actor=actor,
                role=role,
                source=source,
                details={
                    "through_seq": through,
                    "purged": purged,
                    "cutoff": canonical_time(cutoff),
                    "retention_days": older_than_days,
                    "anchor_hash": str(head_hash),
                },
            ).record()
        )
        row["id"] = uuid.uuid4().hex
        audit.extend(connection, [row])
        return PurgeResult(purged, through, anchor, str(row["id"])), [anchor]

    return audit.run_serialised(work)
