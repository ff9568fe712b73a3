"""The review queue service: what gets queued, sealing under the policy's retention, decisions.

A task output is queued when its confidence is below `review_confidence_threshold` or when it
failed output validation on every tier (then there is no output, only the input to correct).
What is kept follows the request's policy: with `retention: {content: encrypted, days: N}` the
text the model saw (after the policy's actions), the parameters and the output are sealed with
AES-GCM and expire after N days; with `content: never` the item holds metadata only (receipt,
HMAC digests, sizes) and says so. Content is never logged nor written to the audit trail.

Every decision is audited: `review.queued`, `review.opened`, `review.accepted`,
`review.corrected`, `review.golden_added`. Queuing an item and deciding on it commit in one
transaction with their events, so the trail never misses a change to the queue, nor records one
that did not happen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import Engine
from sqlmodel import col, select

from appliance.audit.events import (
    ReviewAccepted,
    ReviewCorrected,
    ReviewEvent,
    ReviewGoldenAdded,
    ReviewOpened,
    ReviewQueued,
)
from appliance.audit.store import AuditLog, AuditRecord, ChainTransaction
from appliance.auth.actor import Purpose
from appliance.db.engine import scrub, secure_delete_on, session_scope
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.eval.goldensets import append_items
from appliance.policies.schema import LoadedPolicy
from appliance.review.models import STATUSES, ReviewItem

log = logging.getLogger(__name__)

METADATA_ONLY = (
    "The policy of this request retains no content: the item holds metadata only "
    "(receipt, digests, sizes)."
)
EXPIRED = "The content of this item reached the end of its retention and was removed."


@dataclass(frozen=True)
class Captured:
    """One finished (or failed) task as the gateway hands it to the queue."""

    actor: str
    task: str
    policy: LoadedPolicy
    text: str
    """The text the model received, after the policy's actions."""
    params: dict[str, Any]
    output: dict[str, Any] | None
    receipt: dict[str, Any]
    audit_id: str | None
    request_id: str | None
    model: str | None
    tier: str | None
    failed: bool = False
    purpose: Purpose = Purpose.INTERACTIVE
    """Why the request ran (the caller's `Actor.purpose`)."""


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _expected_of(task: str, output: dict[str, Any] | None) -> Any:
    """What a golden set expects for an accepted output: a classification's label, else the
    output object itself."""
    if output is None:
        return None
    if task == "classify" and "label" in output:
        return output["label"]
    return {k: v for k, v in output.items() if k != "escalation_unavailable"}


class ReviewQueue:
    """Queued outputs: capture, listing, opening (reviewers), accepting and correcting."""

    def __init__(
        self,
        engine: Engine,
        sealer: Sealer,
        *,
        audit: AuditLog,
        digest_key: bytes,
        confidence_threshold: float,
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        self.audit = audit
        self._digest_key = digest_key
        self.confidence_threshold = confidence_threshold
        # Whether wiped content may still sit in the database files: True at start-up, as the
        # process before this one may have died between a wipe and its scrub.
        self._scrub_pending = True

    # -- intake --------------------------------------------------------------------------------
    def reason_for(self, captured: Captured) -> tuple[str | None, float | None]:
        """Why `captured` should be reviewed (None: it should not), and its confidence.

        Evaluation traffic (purpose `evaluation`) is never queued: it is already scored
        against its golden set, and would bury the work people need to see."""
        if captured.purpose is Purpose.EVALUATION:
            return None, None
        if captured.failed:
            return "output_invalid", None
        output = captured.output or {}
        confidence = output.get("confidence")
        if (
            isinstance(confidence, int | float)
            and not isinstance(confidence, bool)
            and confidence < self.confidence_threshold
        ):
            return "low_confidence", float(confidence)
        return None, None

    def digest(self, value: str) -> str:
        """HMAC-SHA256 under the install's PII hash key: comparable, not reversible by a list."""
        return hmac.new(self._digest_key, value.encode(), hashlib.sha256).hexdigest()

    def offer_sync(self, captured: Captured, *, now: datetime | None = None) -> str | None:
        """Queue `captured` if it needs review; returns the item id (None: not queued)."""
        reason, confidence = self.reason_for(captured)
        if reason is None:
            return None
        now = now or utcnow()
        retention = captured.policy.policy.retention
        output_json = (
            json.dumps(captured.output, sort_keys=True) if captured.output is not None else None
        )
        item = ReviewItem(
            created_at=now,
            task=captured.task,
            reason=reason,
            confidence=confidence,
            model=captured.model,
            tier=captured.tier,
            policy=captured.policy.ref,
            actor=captured.actor[:200],
            audit_id=captured.audit_id,
            request_id=captured.request_id,
            receipt=captured.receipt,
            input_digest=self.digest(captured.text),
            output_digest=self.digest(output_json) if output_json is not None else None,
            input_chars=len(captured.text),
        )
        if retention.content == "encrypted" and retention.days is not None:
            content = {"input": captured.text, "params": captured.params, "output": captured.output}
            item.content_kept = True
            item.content_sealed = self._seal(item.id, content)
            item.expires_at = now + timedelta(days=retention.days)
        with self.audit.transaction() as tx:
            tx.session.add(item)
            tx.append(
                ReviewQueued(
                    actor=captured.actor,
                    outcome=reason,
                    policy=captured.policy.ref,
                    model=captured.model,
                    request_id=captured.request_id,
                    target=f"review:{item.id}",
                    details={"task": captured.task, "content_kept": item.content_kept},
                ).record()
            )
        return item.id

    async def offer(self, captured: Captured) -> str | None:
        """`offer_sync` off the event loop. A failure here never fails the request: it is
        logged (ids only) and the answer still goes out."""
        if self.reason_for(captured)[0] is None:
            return None
        try:
            return await anyio.to_thread.run_sync(lambda: self.offer_sync(captured))
        except Exception:
            log.error(
                "review queue intake failed",
                extra={"request_id": captured.request_id, "detail": captured.task},
                exc_info=False,
            )
            return None

    async def offer_task(self, **fields: Any) -> str | None:
        """The gateway's entry point (`appliance.gateway.ReviewIntake`): `Captured`'s fields."""
        return await self.offer(Captured(**fields))

    # -- sealing -------------------------------------------------------------------------------
    def _seal(self, item_id: str, content: dict[str, Any]) -> bytes:
        return self.sealer.seal(json.dumps(content).encode(), bound_to=f"review:{item_id}")

    def _open(self, item: ReviewItem, now: datetime) -> dict[str, Any] | None:
        expires = _aware(item.expires_at)
        if item.content_sealed is None or (expires is not None and expires <= now):
            return None
        opened: dict[str, Any] = json.loads(
            self.sealer.open(item.content_sealed, bound_to=f"review:{item.id}")
        )
        return opened

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def summary(item: ReviewItem) -> dict[str, Any]:
        """What the list shows of an item: no content."""
        return {
            "id": item.id,
            "created_at": _aware(item.created_at).isoformat(),  # type: ignore[union-attr]
            "task": item.task,
            "reason": item.reason,
            "confidence": item.confidence,
            "model": item.model,
            "tier": item.tier,
            "policy": item.policy,
            "status": item.status,
            "content_kept": item.content_kept and item.content_sealed is not None,
            "expires_at": (_aware(item.expires_at).isoformat() if item.expires_at else None),  # type: ignore[union-attr]
            "reviewer": item.reviewer,
            "golden_set": item.golden_set,
            "golden_version": item.golden_version,
        }

    def list_items(
        self, *, status: str | None = "pending", limit: int = 100
    ) -> list[dict[str, Any]]:
        """Items, newest first, optionally of one status."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be from 1 to 1000", field="limit")
        with session_scope(self.engine) as session:
            statement = select(ReviewItem).order_by(col(ReviewItem.created_at).desc()).limit(limit)
            if status is not None:
                statement = statement.where(ReviewItem.status == status)
            return [self.summary(item) for item in session.exec(statement)]

    def counts(self) -> dict[str, int]:
        """How many items there are of each status."""
        with session_scope(self.engine) as session:
            items = session.exec(select(ReviewItem.status)).all()
        return {status: sum(1 for s in items if s == status) for status in STATUSES}

    def _get(self, item_id: str) -> ReviewItem:
        with session_scope(self.engine) as session:
            item = session.get(ReviewItem, item_id)
        if item is None:
            raise NotFound(f"no review item '{item_id}'", field="item_id")
        return item

    @staticmethod
    def _event(
        event: type[ReviewEvent], item: ReviewItem, *, actor: str, role: str, **details: Any
    ) -> AuditRecord:
        return event(
            actor=actor,
            role=role,
            policy=item.policy,
            model=item.model,
            request_id=item.request_id,
            target=f"review:{item.id}",
            details={"task": item.task, **details},
        ).record()

    def _record(
        self,
        event: type[ReviewEvent],
        item: ReviewItem,
        *,
        actor: str,
        role: str,
        tx: ChainTransaction | None = None,
        **details: Any,
    ) -> None:
        record = self._event(event, item, actor=actor, role=role, **details)
        if tx is not None:
            tx.append(record)
        else:
            self.audit.append_sync(record)

    def open_sync(
        self,
        item_id: str,
        *,
        actor: str,
        role: str,
        now: datetime | None = None,
        audit: bool = True,
    ) -> dict[str, Any]:
        """An item with its content (if kept and not expired) for a reviewer; audited unless
        shown again right after a decision that was itself audited."""
        now = now or utcnow()
        item = self._get(item_id)
        content = self._open(item, now)
        view = self.summary(item) | {
            "receipt": item.receipt,
            "input_digest": item.input_digest,
            "output_digest": item.output_digest,
            "input_chars": item.input_chars,
            "reviewed_at": _aware(item.reviewed_at).isoformat() if item.reviewed_at else None,  # type: ignore[union-attr]
        }
        if content is None:
            view["content"] = None
            view["note"] = METADATA_ONLY if not item.content_kept else EXPIRED
        else:
            view["content"] = content
            view["note"] = None
        if audit:
            self._record(ReviewOpened, item, actor=actor, role=role, content=content is not None)
        return view

    # -- decisions -----------------------------------------------------------------------------
    def _decide(
        self,
        item_id: str,
        *,
        actor: str,
        role: str,
        expected: Any,
        corrected: bool,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        now = now or utcnow()
        # The decision and its event are one commit; a refusal below rolls back both.
        with self.audit.transaction() as tx:
            session = tx.session
            item = session.get(ReviewItem, item_id)
            if item is None:
                raise NotFound(f"no review item '{item_id}'", field="item_id")
            if item.status != "pending":
                raise Conflict(
                    f"review item '{item_id}' was already {item.status}", field="item_id"
                )
            content = self._open(item, now)
            if content is None and corrected:
                raise InvalidInput(
                    "this item holds no content (the policy retains none, or it expired); "
                    "it can be accepted but not corrected",
                    field="expected",
                )
            if content is not None:
                content["expected"] = (
                    expected if corrected else _expected_of(item.task, content.get("output"))
                )
                item.content_sealed = self._seal(item.id, content)
            item.status = "corrected" if corrected else "accepted"
            item.reviewer = actor[:200]
            item.reviewed_at = now
            session.add(item)
            session.flush()
            session.refresh(item)
            summary = self.summary(item)
            self._record(
                ReviewCorrected if corrected else ReviewAccepted,
                item,
                actor=actor,
                role=role,
                tx=tx,
            )
        return summary

    def accept_sync(self, item_id: str, *, actor: str, role: str) -> dict[str, Any]:
        """Mark the output right as it is; audited `review.accepted`."""
        return self._decide(item_id, actor=actor, role=role, expected=None, corrected=False)

    def correct_sync(self, item_id: str, *, actor: str, role: str, expected: Any) -> dict[str, Any]:
        """Record the right output (a label for a classification, else a JSON object)."""
        item = self._get(item_id)
        expected = check_expected(item.task, expected)
        return self._decide(item_id, actor=actor, role=role, expected=expected, corrected=True)

    def add_to_golden_set_sync(
        self, item_id: str, *, set_name: str, actor: str, role: str
    ) -> dict[str, Any]:
        """Append the item's input and its reviewed output to a golden set; returns the
        set's new version. The set must exist (the golden-set store's NotFound otherwise)."""
        set_name = set_name.strip()
        if not set_name:
            raise InvalidInput("name the golden set", field="set_name")
        item = self._get(item_id)
        if item.status == "pending":
            raise InvalidInput("accept or correct the item first", field="item_id")
        content = self._open(item, utcnow())
        if content is None or content.get("expected") is None:
            raise InvalidInput(
                "this item holds no content to add (the policy retains none, or it expired)",
                field="item_id",
            )
        version = append_items(
            self.engine,
            self.sealer,
            set_name,
            [(str(content["input"]), content["expected"])],
            author=actor,
        )
        # The set's new version commits first (it is the golden-set store's own transaction);
        # marking the item and its event are one commit after it.
        with self.audit.transaction() as tx:
            row = tx.session.get(ReviewItem, item_id)
            assert row is not None
            row.golden_set = set_name[:200]
            row.golden_version = int(version)
            tx.session.add(row)
            self._record(
                ReviewGoldenAdded,
                item,
                actor=actor,
                role=role,
                tx=tx,
                set=set_name[:100],
                version=version,
            )
        return {"item_id": item_id, "set_name": set_name, "version": int(version)}

    # -- retention -----------------------------------------------------------------------------
    def sweep_sync(self, now: datetime | None = None) -> int:
        """Wipe the content of items past their retention; the metadata stays. Returns how many."""
        now = now or utcnow()
        with session_scope(self.engine) as session:
            items = session.exec(
                select(ReviewItem).where(
                    col(ReviewItem.expires_at) <= now, col(ReviewItem.content_sealed).is_not(None)
                )
            ).all()
            if items:
                # As for documents: the overwritten ciphertext leaves no copy in the files.
                secure_delete_on(session)
                for item in items:
                    item.content_sealed = None
                    session.add(item)
        if items or self._scrub_pending:
            # After the commit; a crash before it is made up by the next process's first sweep.
            self._scrub_pending = True
            scrub(self.engine, ReviewItem.__tablename__)
            self._scrub_pending = False
        return len(items)

    async def sweep(self) -> int:
        """`sweep_sync` off the event loop."""
        return await anyio.to_thread.run_sync(self.sweep_sync)


def check_expected(task: str, expected: Any) -> Any:
    """A correction: a non-empty label for a classification, a JSON object otherwise."""
    if task == "classify":
        if isinstance(expected, dict) and "label" in expected:
            expected = expected["label"]
        if not isinstance(expected, str) or not expected.strip() or len(expected) > 200:
            raise InvalidInput("give the right label (1 to 200 characters)", field="expected")
        return expected.strip()
    if not isinstance(expected, dict) or not expected:
        raise InvalidInput("give the right output as a JSON object", field="expected")
    if len(json.dumps(expected)) > 100_000:
        raise InvalidInput(
            "the correction is too large (100,000 characters at most)", field="expected"
        )
    return expected
