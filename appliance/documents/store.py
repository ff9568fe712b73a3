"""Documents in the database: sealed on write, opened only for their owner, deleted for real.

Deleting a row is not enough to make its bytes unreadable: SQLite keeps freed pages and old page
images in the write-ahead log. On SQLite a delete therefore runs with `secure_delete` (freed pages
are zeroed) and then truncates the log; on PostgreSQL the table is vacuumed after the delete. The
ciphertext is useless without the key file in any case.

A write the trail records (an upload, a deletion) commits in one transaction with its audit event
(`AuditLog.transaction`), so a crash leaves both or neither. The scrub follows the commit; when a
crash interrupts it, the next sweep (the first one of the restarted process) runs it again.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.db.engine import scrub, secure_delete_on, session_scope
from appliance.documents.crypto import Sealer
from appliance.documents.extract import Extracted
from appliance.documents.models import DocumentRow

if TYPE_CHECKING:
    from appliance.audit.store import AuditLog, AuditRecord

log = logging.getLogger(__name__)

Event = Callable[["DocumentInfo"], "AuditRecord"]
"""Builds the audit record of a write from the document's metadata."""


@dataclass(frozen=True)
class DocumentInfo:
    """What the owner may see about a document without reading its text."""

    id: str
    name: str
    kind: str
    size_bytes: int
    chars: int
    pages: int | None
    sha256: str
    created_at: datetime
    expires_at: datetime

    def public(self) -> dict[str, Any]:
        """As the API returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "chars": self.chars,
            "pages": self.pages,
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


class DocumentStore:
    """Sealed documents of every owner; every read names its owner."""

    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        self._engine = engine
        self._sealer = sealer
        # Whether deleted content may still sit in the database files: True at start-up, as
        # the process before this one may have died between a deletion and its scrub.
        self.scrub_pending = True

    def add(
        self,
        *,
        owner: str,
        name: str,
        data: bytes,
        extracted: Extracted,
        policy: str | None,
        created_at: datetime,
        expires_at: datetime,
        audit: AuditLog | None = None,
        event: Event | None = None,
    ) -> DocumentInfo:
        """Seal and store one document; returns its metadata. With `audit` and `event`, the row
        and the event `event(info)` commit in one transaction."""
        doc_id = uuid.uuid4().hex
        row = DocumentRow(
            id=doc_id,
            owner=owner,
            kind=extracted.kind,
            size_bytes=len(data),
            chars=len(extracted.text),
            pages=extracted.pages,
            sha256=hashlib.sha256(data).hexdigest(),
            policy=policy,
            created_at=created_at,
            expires_at=expires_at,
            name_sealed=self._sealer.seal(name.encode(), bound_to=f"document-name:{doc_id}"),
            text_sealed=self._sealer.seal(extracted.text.encode(), bound_to=f"document:{doc_id}"),
        )
        info = self._info(row)
        if audit is not None and event is not None:
            with audit.transaction() as tx:
                tx.session.add(row)
                tx.append(event(info))
        else:
            with session_scope(self._engine) as session:
                session.add(row)
        return info

    def owned(self, owner: str) -> list[DocumentInfo]:
        """The owner's documents, newest first."""
        with session_scope(self._engine) as session:
            rows = session.exec(
                select(DocumentRow)
                .where(DocumentRow.owner == owner)
                .order_by(col(DocumentRow.created_at).desc())
            )
            return [self._info(row) for row in rows]

    def get(self, owner: str, doc_id: str) -> DocumentInfo | None:
        """One of the owner's documents, or None (another owner's is as absent as a missing one)."""
        row = self._row(owner, doc_id)
        return self._info(row) if row is not None else None

    def text(self, owner: str, doc_id: str) -> str | None:
        """The decrypted text of one of the owner's documents, or None."""
        row = self._row(owner, doc_id)
        if row is None:
            return None
        return self._sealer.open(row.text_sealed, bound_to=f"document:{doc_id}").decode()

    def delete(
        self, owner: str | None, doc_id: str, *, audit: AuditLog, event: Event
    ) -> DocumentInfo | None:
        """Delete a document (`owner` None: any owner, for the sweeper) and append `event(info)`
        in the same transaction; None when there is no such document. Call `scrub` after."""
        with audit.transaction() as tx:
            statement = select(DocumentRow).where(DocumentRow.id == doc_id)
            if owner is not None:
                statement = statement.where(DocumentRow.owner == owner)
            row = tx.session.exec(statement).first()
            if row is None:
                return None
            info = self._info(row)
            secure_delete_on(tx.session)
            tx.session.delete(row)
            tx.append(event(info))
        self.scrub_pending = True
        return info

    def scrub(self) -> None:
        """Leave no copy of deleted documents in the database files (see the module docstring).
        A failure is logged and left for the next sweep: the deletion itself has committed."""
        self.scrub_pending = True
        try:
            scrub(self._engine, DocumentRow.__tablename__)
        except Exception:
            log.error("scrubbing deleted documents failed; the next sweep retries", exc_info=True)
            return
        self.scrub_pending = False

    def expired(self, now: datetime) -> list[str]:
        """Ids of documents whose expiry has passed."""
        with session_scope(self._engine) as session:
            return list(
                session.exec(select(DocumentRow.id).where(col(DocumentRow.expires_at) <= now))
            )

    def _row(self, owner: str, doc_id: str) -> DocumentRow | None:
        with session_scope(self._engine) as session:
            return session.exec(
                select(DocumentRow).where(DocumentRow.id == doc_id, DocumentRow.owner == owner)
            ).first()

    def _info(self, row: DocumentRow) -> DocumentInfo:
        return DocumentInfo(
            id=row.id,
            name=self._sealer.open(row.name_sealed, bound_to=f"document-name:{row.id}").decode(),
            kind=row.kind,
            size_bytes=row.size_bytes,
            chars=row.chars,
            pages=row.pages,
            sha256=row.sha256,
            created_at=aware(row.created_at),
            expires_at=aware(row.expires_at),
        )


def aware(moment: datetime) -> datetime:
    """`moment` in UTC with its zone (SQLite hands back naive values)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
