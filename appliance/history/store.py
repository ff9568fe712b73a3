"""Keep, open, delete and expire the retained content of users' own requests.

The gateway offers every finished request (`keep`); content is stored only when the request's
policy says `retention: {content: encrypted, days: N}` and the caller is a signed-in user (the
history is a page of one's own requests; API keys have none). The input text, the task's
parameters and the answer are sealed together with the install's content key, bound to the row,
and removed when the policy's days have passed (`sweep`, audited `history.expired`) or when the
owner deletes them (`history.deleted`). Each removal commits with its audit event in one
transaction; the scrub of the database files follows the commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from appliance.audit.events import HistoryDeleted, HistoryExpired
from appliance.audit.store import AuditLog, AuditRecord
from appliance.db.engine import scrub, secure_delete_on
from appliance.documents.crypto import Sealer
from appliance.errors import NotFound
from appliance.history.models import HistoryRow
from appliance.policies.schema import LoadedPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retained:
    """One request's retained content, opened for its owner."""

    id: str
    task: str
    policy: str
    text: str
    params: dict[str, Any]
    output: Any
    created_at: datetime
    expires_at: datetime


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class History:
    """Retained request content, sealed at rest, per owner."""

    def __init__(self, engine: Engine, sealer: Sealer, *, audit: AuditLog) -> None:
        self.engine = engine
        self.sealer = sealer
        self.audit = audit
        # Whether removed content may still sit in the database files: True at start-up, as
        # the process before this one may have died between a removal and its scrub.
        self._scrub_pending = True

    # -- writing ------------------------------------------------------------------------------
    async def keep(
        self,
        *,
        actor: str,
        audit_id: str,
        task: str,
        policy: LoadedPolicy,
        text: str,
        params: dict[str, Any],
        output: Any,
    ) -> bool:
        """Store the request's content if its policy retains content; True when stored."""
        rules = policy.policy.retention
        if rules.content != "encrypted" or rules.days is None or not actor.startswith("user:"):
            return False
        now = datetime.now(UTC)
        payload = json.dumps(
            {"text": text, "params": params, "output": output}, ensure_ascii=False
        ).encode()
        row = HistoryRow(
            id=audit_id,
            owner=actor,
            task=task,
            policy=policy.ref,
            chars=len(text),
            created_at=now,
            expires_at=now + timedelta(days=rules.days),
            content_sealed=self.sealer.seal(payload, bound_to=f"history:{audit_id}"),
        )

        def write() -> None:
            with Session(self.engine) as session:
                session.add(row)
                session.commit()

        await anyio.to_thread.run_sync(write)
        return True

    # -- reading ------------------------------------------------------------------------------
    def retained_ids(self, owner: str) -> dict[str, datetime]:
        """Ids of the owner's requests whose content is still kept, with their expiry."""
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            rows = session.exec(
                select(HistoryRow.id, HistoryRow.expires_at).where(HistoryRow.owner == owner)
            ).all()
        return {i: _utc(e) for i, e in rows if _utc(e) > now}

    def open(self, owner: str, entry_id: str) -> Retained:
        """The decrypted content of one of the owner's requests; NotFound otherwise."""
        with Session(self.engine) as session:
            row = session.get(HistoryRow, entry_id)
        if row is None or row.owner != owner or _utc(row.expires_at) <= datetime.now(UTC):
            raise NotFound(f"no retained content for request '{entry_id}'", field="entry_id")
        try:
            plain = self.sealer.open(row.content_sealed, bound_to=f"history:{row.id}")
        except ValueError as exc:
            raise NotFound(
                f"the retained content of '{entry_id}' does not authenticate", field="entry_id"
            ) from exc
        data = json.loads(plain)
        return Retained(
            id=row.id,
            task=row.task,
            policy=row.policy,
            text=str(data["text"]),
            params=dict(data.get("params") or {}),
            output=data.get("output"),
            created_at=_utc(row.created_at),
            expires_at=_utc(row.expires_at),
        )

    # -- removing ----------------------------------------------------------------------------
    def _remove(
        self, owner: str | None, entry_id: str, event: Callable[[HistoryRow], AuditRecord]
    ) -> HistoryRow | None:
        """Delete the row and append `event(row)` in one transaction: the content is gone if and
        only if the trail says so. As for documents, SQLite zeroes the freed pages; the copies
        left in the write-ahead log (or, on PostgreSQL, in dead tuples) go in `_scrub`."""
        with self.audit.transaction() as tx:
            row = tx.session.get(HistoryRow, entry_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            secure_delete_on(tx.session)
            tx.session.delete(row)
            tx.append(event(row))
        return row

    def _scrub(self) -> None:
        """Leave no copy of removed content in the database files. Runs after the commit, so a
        crash can interrupt it: a new `History` (a restarted process) scrubs on its first sweep,
        and a failure here is retried by the next sweep."""
        self._scrub_pending = True
        try:
            scrub(self.engine, HistoryRow.__tablename__)
        except Exception:
            log.error(
                "scrubbing removed history content failed; the next sweep retries", exc_info=True
            )
            return
        self._scrub_pending = False

    def delete_sync(self, owner: str, entry_id: str, *, role: str, source: str | None) -> None:
        """The owner deletes one request's retained content (audited `history.deleted`)."""

        def deleted(row: HistoryRow) -> AuditRecord:
            return HistoryDeleted(
                actor=owner,
                role=role,
                source=source,
                target=entry_id,
                details={"task": row.task, "chars": row.chars},
            ).record()

        if self._remove(owner, entry_id, deleted) is None:
            raise NotFound(f"no retained content for request '{entry_id}'", field="entry_id")
        self._scrub()

    async def delete(self, owner: str, entry_id: str, *, role: str, source: str | None) -> None:
        """`delete_sync` off the event loop."""
        await anyio.to_thread.run_sync(
            lambda: self.delete_sync(owner, entry_id, role=role, source=source)
        )

    def sweep_sync(self, now: datetime | None = None) -> int:
        """Remove content past its expiry, one `history.expired` event each, each row with its
        event in one transaction; then scrub. Returns how many rows were removed."""
        now = now or datetime.now(UTC)
        with Session(self.engine) as session:
            expired = list(
                session.exec(select(HistoryRow.id).where(col(HistoryRow.expires_at) <= now)).all()
            )

        def event(row: HistoryRow) -> AuditRecord:
            return HistoryExpired(
                actor="system",
                target=row.id,
                details={"task": row.task, "expired_at": _utc(row.expires_at).isoformat()},
            ).record()

        removed = 0
        for entry_id in expired:
            # None: its owner deleted it meanwhile, or another replica swept it first.
            if self._remove(None, entry_id, event) is not None:
                removed += 1
        if removed or self._scrub_pending:
            self._scrub()
        return removed

    async def sweep(self) -> int:
        """`sweep_sync` off the event loop."""
        return await anyio.to_thread.run_sync(self.sweep_sync)
