"""Keep, open, delete and expire the retained content of users' own requests.

The gateway offers every finished request (`keep`); content is stored only when the request's
policy says `retention: {content: encrypted, days: N}` and the caller is a signed-in user (the
history is a page of one's own requests; API keys have none). The input text, the task's
parameters and the answer are sealed together with the install's content key, bound to the row,
and removed when the policy's days have passed (`sweep`, audited `history.expired`) or when the
owner deletes them (`history.deleted`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from appliance.audit.events import HistoryDeleted, HistoryExpired
from appliance.audit.store import AuditLog
from appliance.db.engine import scrub, secure_delete_on
from appliance.documents.crypto import Sealer
from appliance.errors import NotFound
from appliance.history.models import HistoryRow
from appliance.policies.schema import LoadedPolicy


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
    def _remove(self, owner: str | None, entry_id: str) -> HistoryRow | None:
        """Delete the row for good: as for documents, SQLite overwrites freed pages and the
        write-ahead log is truncated; PostgreSQL vacuums the table."""
        with Session(self.engine) as session:
            row = session.get(HistoryRow, entry_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            secure_delete_on(session)
            session.delete(row)
            session.commit()
        scrub(self.engine, "history_entries")
        return row

    async def delete(self, owner: str, entry_id: str, *, role: str, source: str | None) -> None:
        """The owner deletes one request's retained content (audited `history.deleted`)."""
        row = await anyio.to_thread.run_sync(self._remove, owner, entry_id)
        if row is None:
            raise NotFound(f"no retained content for request '{entry_id}'", field="entry_id")
        await self.audit.append(
            HistoryDeleted(
                actor=owner,
                role=role,
                source=source,
                target=entry_id,
                details={"task": row.task, "chars": row.chars},
            ).record()
        )

    async def sweep(self) -> int:
        """Remove content past its expiry, one `history.expired` row each; returns the count."""
        now = datetime.now(UTC)

        def expired() -> list[str]:
            with Session(self.engine) as session:
                return list(
                    session.exec(
                        select(HistoryRow.id).where(col(HistoryRow.expires_at) <= now)
                    ).all()
                )

        removed = 0
        for entry_id in await anyio.to_thread.run_sync(expired):
            row = await anyio.to_thread.run_sync(self._remove, None, entry_id)
            if row is None:
                continue
            await self.audit.append(
                HistoryExpired(
                    actor="system",
                    target=entry_id,
                    details={"task": row.task, "expired_at": _utc(row.expires_at).isoformat()},
                ).record()
            )
            removed += 1
        return removed
