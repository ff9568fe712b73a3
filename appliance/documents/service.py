"""The documents service: upload (extract in a worker, seal, audit), read, delete, expire.

Each upload, deletion and expiry commits in one transaction with its audit event.

Expiry: a document must be stored to be used by a task, whatever the policy. When the caller's
policy says `retention: {content: encrypted, days: N}`, it is kept N days; when it says `never`
(the default), it is kept `document_default_retention_hours` (24 h by default) and then swept.
Audit rows carry ids, sizes, types and hashes only, never a name or text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from appliance.audit.events import DocumentDeleted, DocumentExpired, DocumentUploaded
from appliance.db.models import utcnow
from appliance.documents.extract import ExtractionError, Limits
from appliance.documents.store import DocumentInfo, DocumentStore
from appliance.documents.worker import extract_isolated
from appliance.errors import InvalidInput, NotFound, PayloadTooLarge
from appliance.policies.resolve import resolve_policy

if TYPE_CHECKING:
    from appliance.audit.store import AuditLog, AuditRecord
    from appliance.auth.actor import Actor
    from appliance.config import Settings
    from appliance.policies.schema import LoadedPolicy
    from appliance.policies.store import PolicyStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadLimits:
    """Size, page, text, unpack, time and memory limits of one upload."""

    max_bytes: int
    extract: Limits
    timeout_s: float
    memory_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        """The limits the settings name."""
        return cls(
            max_bytes=settings.document_max_bytes,
            extract=Limits(
                max_pages=settings.document_max_pages,
                max_chars=settings.document_max_chars,
                max_unpacked_bytes=settings.document_max_unpacked_bytes,
            ),
            timeout_s=settings.document_extract_timeout_s,
            memory_bytes=settings.document_extract_memory_bytes,
        )


def retention_for(policy: LoadedPolicy, default: timedelta) -> timedelta:
    """How long content kept under `policy` may live (see the module docstring)."""
    rules = policy.policy.retention
    if rules.content == "encrypted" and rules.days:
        return timedelta(days=rules.days)
    return default


class Documents:
    """Everything the API and the gateway do with documents."""

    def __init__(
        self,
        *,
        store: DocumentStore,
        audit: AuditLog,
        policies: PolicyStore,
        limits: UploadLimits,
        default_retention: timedelta,
    ) -> None:
        self.store = store
        self.audit = audit
        self.policies = policies
        self.limits = limits
        self.default_retention = default_retention

    async def upload(
        self, actor: Actor, *, name: str, data: bytes, request_id: str | None
    ) -> DocumentInfo:
        """Extract, seal and store one file; 413 when too big, 422 when not readable."""
        if len(data) > self.limits.max_bytes:
            raise PayloadTooLarge(
                f"the document has {len(data)} bytes; at most {self.limits.max_bytes} are accepted",
                field="file",
            )
        if not data:
            raise InvalidInput("the file is empty", field="file")
        limits = self.limits
        try:
            extracted = await anyio.to_thread.run_sync(
                lambda: extract_isolated(
                    data,
                    name,
                    limits.extract,
                    timeout_s=limits.timeout_s,
                    memory_bytes=limits.memory_bytes,
                )
            )
        except ExtractionError as exc:
            raise InvalidInput(str(exc), field="file") from None
        # The upload is kept under the caller's own policy (key > team > default).
        policy = resolve_policy(
            self.policies, key_id=actor.key_id, key_policy=actor.key_policy, team=actor.team
        )
        now = utcnow()

        def uploaded(info: DocumentInfo) -> AuditRecord:
            return DocumentUploaded(
                actor=actor.id,
                role=actor.role,
                source=actor.source,
                target=info.id,
                request_id=request_id,
                status_code=201,
                details={
                    "kind": info.kind,
                    "size_bytes": info.size_bytes,
                    "chars": info.chars,
                    "pages": info.pages,
                    "sha256": info.sha256,
                    "policy": policy.ref,
                    "expires_at": info.expires_at.isoformat(),
                },
            ).record()

        # The document and its `document.uploaded` event commit together.
        info = await anyio.to_thread.run_sync(
            lambda: self.store.add(
                owner=actor.id,
                name=name,
                data=data,
                extracted=extracted,
                policy=policy.ref,
                created_at=now,
                expires_at=now + retention_for(policy, self.default_retention),
                audit=self.audit,
                event=uploaded,
            )
        )
        return info

    async def owned(self, actor: Actor) -> list[DocumentInfo]:
        """The caller's own documents."""
        return await anyio.to_thread.run_sync(self.store.owned, actor.id)

    async def get(self, actor: Actor, doc_id: str) -> DocumentInfo:
        """One of the caller's documents; 404 for anyone else's."""
        info = await anyio.to_thread.run_sync(self.store.get, actor.id, doc_id)
        if info is None:
            raise _missing(doc_id)
        return info

    async def text_for(self, actor: Actor, document_id: str) -> str:
        """The decrypted text of one of the caller's documents (what a task runs on)."""
        text = await anyio.to_thread.run_sync(self.store.text, actor.id, document_id)
        if text is None:
            raise _missing(document_id)
        return text

    def delete_sync(self, actor: Actor, doc_id: str, *, request_id: str | None) -> None:
        """Remove one of the caller's documents for good; the deletion and its
        `document.deleted` event are one commit, the scrub of the files follows."""

        def deleted(info: DocumentInfo) -> AuditRecord:
            return DocumentDeleted(
                actor=actor.id,
                role=actor.role,
                source=actor.source,
                target=doc_id,
                request_id=request_id,
                status_code=204,
                details={"kind": info.kind, "size_bytes": info.size_bytes, "sha256": info.sha256},
            ).record()

        if self.store.delete(actor.id, doc_id, audit=self.audit, event=deleted) is None:
            raise _missing(doc_id)
        self.store.scrub()

    async def delete(self, actor: Actor, doc_id: str, *, request_id: str | None) -> None:
        """`delete_sync` off the event loop."""
        await anyio.to_thread.run_sync(
            lambda: self.delete_sync(actor, doc_id, request_id=request_id)
        )

    def sweep_sync(self) -> list[str]:
        """Remove every expired document, each with its `document.expired` event in one
        transaction, then scrub (also when a scrub was left unfinished); returns their ids."""
        now = utcnow()

        def expired(info: DocumentInfo) -> AuditRecord:
            return DocumentExpired(
                actor="system",
                target=info.id,
                details={
                    "kind": info.kind,
                    "size_bytes": info.size_bytes,
                    "expired_at": info.expires_at.isoformat(),
                },
            ).record()

        removed: list[str] = []
        for doc_id in self.store.expired(now):
            # None: deleted by its owner (or swept by another replica) meanwhile.
            if self.store.delete(None, doc_id, audit=self.audit, event=expired) is not None:
                removed.append(doc_id)
        if removed or self.store.scrub_pending:
            self.store.scrub()
        return removed

    async def sweep(self) -> list[str]:
        """`sweep_sync` off the event loop."""
        return await anyio.to_thread.run_sync(self.sweep_sync)


def _missing(doc_id: str) -> NotFound:
    return NotFound(f"document '{doc_id}' does not exist", field="document_id")
