"""Append audit events to the hash chain. The caller awaits the commit before it answers.

Appends are serialised inside the database transaction, so every writer (threads of this
process, other processes, other replicas on PostgreSQL) extends one linear chain with no fork
and no gap: SQLite takes its write lock up front (`BEGIN IMMEDIATE`), PostgreSQL takes a
transaction-scoped advisory lock, and only then is the head read and the next row inserted.
A lock inside the process queues this process's writers cheaply before they reach the database.

A change that the trail records (a deletion of content, say) commits in the same transaction as
its event: `AuditLog.transaction()` opens that serialised transaction as a session, the caller
makes its change and `append`s the event through it, and both commit or neither does. An
`append_sync(..., within=session)` joins a transaction the caller opened itself, and
`append(..., alongside=[row])` inserts rows of other tables (a request's usage row) in the
event's own transaction: one commit, one flush to disk, both rows or neither.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import sqlmodel
from sqlalchemy import Connection, Engine, select, text
from sqlmodel import Session, SQLModel

from appliance.audit import checkpoints, requests
from appliance.audit.chain import GENESIS, row_hash
from appliance.audit.checkpoints import Checkpoint
from appliance.audit.events import GENERIC_COMPLETION, typed_action
from appliance.audit.events import AuditRecord as AuditRecord
from appliance.audit.keys import SigningKey, VerifyKey, load_or_create
from appliance.audit.witness import Witness, from_setting
from appliance.config import Settings
from appliance.db.engine import begin_write_locked
from appliance.db.models import AuditEvent
from appliance.metrics import AUDIT_APPEND

log = logging.getLogger(__name__)

EVENTS_TABLE = AuditEvent.__table__  # type: ignore[attr-defined]
# Any fixed 64-bit number: the one advisory lock every appender takes on PostgreSQL.
PG_LOCK_KEY = 0x41554449545F4C4F

T = TypeVar("T")

_LIMITS = {
    "actor": 200,
    "role": 50,
    "source": 100,
    "target": 200,
    "outcome": 50,
    "policy": 200,
    "model": 200,
    "tier": 50,
    "request_id": 64,
}
_DETAIL_TEXT_LIMIT = 200


def _check_text(name: str, value: str | None, *, required: bool = False) -> None:
    if value is None:
        if required:
            raise ValueError(f"audit record: '{name}' is required")
        return
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"audit record: '{name}' must be a non-empty string")
    if len(value) > _LIMITS[name]:
        raise ValueError(f"audit record: '{name}' is longer than {_LIMITS[name]} characters")


def validate(record: AuditRecord) -> dict[str, Any]:
    """The row's own columns for `record`; `ValueError` naming the field that is wrong.

    The action must be a known event (see `events.typed_action`). Counts are non-negative
    integers; details hold short scalars only, so free text cannot ride along.
    """
    action = typed_action(record.action, record.outcome, record.status_code)
    if (
        record.action == GENERIC_COMPLETION
        and action in ("completion.allowed", "completion.redacted")
        and record.details.get("escalations")
    ):
        # Answered by a larger tier than first chosen; `outcome` still says what the policy did.
        action = "completion.escalated"
    _check_text("actor", record.actor, required=True)
    _check_text("outcome", record.outcome, required=True)
    for name in ("role", "source", "target", "policy", "model", "tier", "request_id"):
        _check_text(name, getattr(record, name))
    counts: dict[str, int] = {}
    for entity, count in dict(record.entity_counts).items():
        if not isinstance(entity, str) or len(entity) > 64:
            raise ValueError("audit record: 'entity_counts' keys must be entity names")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"audit record: 'entity_counts.{entity}' must be a count")
        counts[entity] = count
    details: dict[str, Any] = {}
    for key, value in dict(record.details).items():
        if not isinstance(key, str) or len(key) > 64:
            raise ValueError("audit record: 'details' keys must be short names")
        if value is not None and not isinstance(value, bool | int | str):
            raise ValueError(f"audit record: 'details.{key}' must be a string, integer or bool")
        if isinstance(value, str) and len(value) > _DETAIL_TEXT_LIMIT:
            raise ValueError(f"audit record: 'details.{key}' is too long for an audit value")
        details[key] = value
    if record.status_code is not None and (
        isinstance(record.status_code, bool) or not isinstance(record.status_code, int)
    ):
        raise ValueError("audit record: 'status_code' must be an integer")
    return {
        "actor": record.actor,
        "role": record.role,
        "source": record.source,
        "action": action,
        "target": record.target,
        "outcome": record.outcome,
        "policy": record.policy,
        "entity_counts": counts,
        "model": record.model,
        "tier": record.tier,
        "request_id": record.request_id,
        "status_code": record.status_code,
        "details": details,
    }


@dataclass(frozen=True)
class Head:
    """The last link of the chain: its sequence number and hash."""

    seq: int
    hash: str


def begin_serialised(connection: Connection) -> None:
    """Start the transaction holding the chain's write lock until commit or rollback."""
    if connection.dialect.name == "sqlite":
        # The write lock now: no other writer can read the same head between our read and
        # our insert.
        begin_write_locked(connection)
    elif connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database {connection.dialect.name}")


def join_serialised(connection: Connection) -> None:
    """Hold the chain's write lock in the transaction `connection` is in (or is about to open).

    PostgreSQL: the advisory lock can be taken at any point of a transaction (again is harmless),
    and each later statement reads what was committed before it was granted. SQLite: a
    connection not yet in a transaction begins one with the write lock; one already in a
    transaction has written (pysqlite opens a transaction only for a write), so it holds the
    write lock and reads the newest snapshot, as SQLite grants that lock on no other.
    """
    if connection.dialect.name == "sqlite":
        dbapi = connection.connection.dbapi_connection
        if dbapi is None or not dbapi.in_transaction:
            begin_write_locked(connection)
    else:
        begin_serialised(connection)


def read_head(connection: Connection) -> Head:
    """The chain's head; after a purge of everything, the anchor it continues from."""
    row = connection.execute(
        select(EVENTS_TABLE.c.seq, EVENTS_TABLE.c.hash).order_by(EVENTS_TABLE.c.seq.desc()).limit(1)
    ).first()
    if row is not None:
        return Head(int(row.seq), str(row.hash))
    anchor = checkpoints.latest(connection, kind="anchor")
    if anchor is not None:
        return Head(anchor.seq, anchor.head_hash)
    return Head(0, GENESIS)


class ChainTransaction:
    """A serialised transaction opened by `AuditLog.transaction()`: the caller's changes go
    through `session`, its events through `append`; they commit together or not at all."""

    def __init__(self, log: AuditLog, session: Session) -> None:
        self._log = log
        self.session = session
        self.head: Head | None = None

    @property
    def connection(self) -> Connection:
        """The connection the transaction runs on (for Core statements)."""
        return self.session.connection()

    def append(self, record: AuditRecord, *, event_id: str | None = None) -> str:
        """Link one event onto the chain in this transaction; returns its id.

        Pending ORM changes are flushed first, so the change and its event reach the database
        in that order (a crash between them rolls both back).
        """
        row = validate(record)
        row["id"] = event_id or uuid.uuid4().hex
        self.session.flush()
        self.head = self._log.extend(self.connection, [row])
        return str(row["id"])


class AuditLog:
    """Appends typed events to the hash chain and writes signed checkpoints.

    Without a signing key (`key=None`) the chain is still written and verifiable, but no
    checkpoints are made; the app always passes one.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        key: SigningKey | None = None,
        checkpoint_every: int = 1000,
        checkpoint_minutes: float = 15.0,
        witness: Witness | None = None,
    ) -> None:
        self._engine = engine
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = timedelta(minutes=checkpoint_minutes)
        self.witness = witness
        self._lock = threading.Lock()
        self._inside = threading.local()
        self._checkpointed_seq = 0

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> AuditLog:
        """The app's audit log: key from the data directory, cadence and witness from settings."""
        return cls(
            engine,
            key=load_or_create(settings.resolved_audit_key_file),
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_minutes=settings.audit_checkpoint_minutes,
            witness=from_setting(settings.audit_witness),
        )

    @property
    def engine(self) -> Engine:
        """The database the chain lives in."""
        return self._engine

    @property
    def verify_key(self) -> VerifyKey | None:
        """The public key of the checkpoints, if this log signs any."""
        return self.key.verify_key if self.key is not None else None

    # --- appending ------------------------------------------------------------------------

    def append_many_sync(
        self, records: Sequence[AuditRecord], *, within: Session | Connection | None = None
    ) -> list[str]:
        """Commit several events in one transaction, in order; returns their ids.

        With `within`, the events join the caller's transaction instead (see `append_sync`).
        """
        rows = [validate(record) for record in records]
        for row in rows:
            row["id"] = uuid.uuid4().hex
        if within is not None:
            self._join(within, rows)
        else:
            self._write(rows)
        return [str(row["id"]) for row in rows]

    def append_sync(
        self,
        record: AuditRecord,
        *,
        event_id: str | None = None,
        within: Session | Connection | None = None,
    ) -> str:
        """Commit one event and return its id. Raises `ValueError` for an unknown event name.

        With `within` (the caller's session or connection), the event is linked inside the
        caller's transaction, which then holds the chain's lock, and commits when the caller
        commits: a change and the event recording it are one commit. No checkpoint is made
        there (the next append or the periodic pass makes it, so it can be witnessed).
        """
        row = validate(record)
        row["id"] = event_id or uuid.uuid4().hex
        if within is not None:
            self._join(within, [row])
        else:
            self._write([row])
        return str(row["id"])

    def _join(self, within: Session | Connection, rows: list[dict[str, Any]]) -> None:
        if isinstance(within, Session):
            within.flush()  # the caller's own changes first, as in `ChainTransaction.append`
            connection = within.connection()
        else:
            connection = within
        join_serialised(connection)
        self.extend(connection, rows)

    @contextmanager
    def transaction(self) -> Iterator[ChainTransaction]:
        """A session in one transaction that holds the chain's lock from its first statement.

        The caller makes its change through `tx.session` and appends the events recording it
        with `tx.append`; on leaving the block both commit (with a checkpoint when one is due,
        witnessed after the commit), and on an exception neither does. Keep the work inside
        short: every other writer of the trail waits for it.
        """
        if getattr(self._inside, "open", False):
            raise RuntimeError("an audit transaction is already open in this thread")
        made: list[Checkpoint] = []
        with self._lock, Session(self._engine, expire_on_commit=False) as session:
            self._inside.open = True
            try:
                begin_serialised(session.connection())
                tx = ChainTransaction(self, session)
                yield tx
                session.flush()
                if tx.head is not None:
                    made = self._due_checkpoints(session.connection(), tx.head, force_time=False)
                session.commit()
            except BaseException:
                session.rollback()
                self._checkpointed_seq = 0  # re-read from the database next time
                raise
            finally:
                self._inside.open = False
        self._witness(made)

    async def append(
        self,
        record: AuditRecord,
        *,
        event_id: str | None = None,
        alongside: Sequence[SQLModel] = (),
    ) -> str:
        """Commit one event off the event loop and return its id.

        `alongside` are rows of other tables (SQLModel table objects) inserted in the same
        transaction as the event: both commit, or neither does."""
        row = validate(record)  # fail on a bad record before taking a thread
        row["id"] = event_id or uuid.uuid4().hex
        await anyio.to_thread.run_sync(lambda: self._write([row], alongside))
        return str(row["id"])

    def _write(self, rows: list[dict[str, Any]], alongside: Sequence[SQLModel] = ()) -> None:
        made: list[Checkpoint] = []
        self._refuse_inside()
        started = time.perf_counter()
        with self._lock, self._engine.connect() as connection:
            begin_serialised(connection)
            try:
                head = self.extend(connection, rows, count=False)
                for other in alongside:
                    table = other.__table__  # type: ignore[attr-defined]
                    connection.execute(table.insert(), [other.model_dump()])
                made = self._due_checkpoints(connection, head, force_time=False)
                connection.commit()
            except BaseException:
                connection.rollback()
                self._checkpointed_seq = 0  # re-read from the database next time
                raise
            AUDIT_APPEND.observe(time.perf_counter() - started)
            # Counted once committed: a request whose row failed to commit still gets one.
            requests.note(rows)
            self._witness(made)

    def _refuse_inside(self) -> None:
        # The thread holds the lock for its open transaction: waiting for it would never end.
        if getattr(self._inside, "open", False):
            raise RuntimeError("append through the open audit transaction (tx.append)")

    def extend(
        self, connection: Connection, rows: list[dict[str, Any]], *, count: bool = True
    ) -> Head:
        """Link `rows` onto the head and insert them; the caller holds the lock (see above).

        `count=False`: the caller counts them for the request once they are committed."""
        head = read_head(connection)
        for row in rows:
            row["seq"] = head.seq + 1
            row["time"] = datetime.now(UTC)
            row["prev_hash"] = head.hash
            row["hash"] = row_hash(row)
            head = Head(row["seq"], row["hash"])
        connection.execute(EVENTS_TABLE.insert(), rows)
        if count:
            requests.note(rows)  # the request being served has its row (`audit.requests`)
        return head

    # --- checkpoints ----------------------------------------------------------------------

    def _due_checkpoints(
        self, connection: Connection, head: Head, *, force_time: bool
    ) -> list[Checkpoint]:
        if self.key is None or head.seq == 0:
            return []
        if not force_time and head.seq - self._checkpointed_seq < self.checkpoint_every:
            # Not due even by this process's last sight of the checkpoints (they only grow),
            # so skip reading them on every append.
            return []
        last = checkpoints.latest(connection)
        self._checkpointed_seq = last.seq if last is not None else 0
        last_seq = last.seq if last is not None else 0
        if head.seq <= last_seq:
            return []
        due = head.seq - last_seq >= self.checkpoint_every
        if not due and force_time:
            last_time = (
                datetime.strptime(last.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                if last is not None
                else None
            )
            due = last_time is None or datetime.now(UTC) - last_time >= self.checkpoint_interval
        if not due:
            return []
        checkpoint = checkpoints.sign(self.key, seq=head.seq, head_hash=head.hash, kind="periodic")
        checkpoints.insert(connection, checkpoint)
        self._checkpointed_seq = head.seq
        return [checkpoint]

    def sign_checkpoint(self, connection: Connection, head: Head, *, kind: str) -> Checkpoint:
        """Sign and store a checkpoint of `head` inside the caller's serialised transaction."""
        if self.key is None:
            raise RuntimeError("this audit log has no signing key")
        checkpoint = checkpoints.sign(self.key, seq=head.seq, head_hash=head.hash, kind=kind)
        checkpoints.insert(connection, checkpoint)
        return checkpoint

    def _witness(self, made: list[Checkpoint]) -> None:
        if self.witness is None:
            return
        for checkpoint in made:
            try:
                self.witness.write(checkpoint)
            except OSError:
                # The checkpoint is in the database; the next one will be witnessed. Loud,
                # because until then a rollback of the database would go unnoticed.
                log.error("audit checkpoint could not be written to the witness", exc_info=True)

    def checkpoint_if_due_sync(self) -> Checkpoint | None:
        """Write a checkpoint if `checkpoint_minutes` passed and events were added since."""
        self._refuse_inside()
        with self._lock, self._engine.connect() as connection:
            begin_serialised(connection)
            try:
                made = self._due_checkpoints(connection, read_head(connection), force_time=True)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            self._witness(made)
        return made[0] if made else None

    def checkpoint_now_sync(self) -> Checkpoint:
        """Write a checkpoint of the current head now (kind `manual`)."""
        self._refuse_inside()
        with self._lock, self._engine.connect() as connection:
            begin_serialised(connection)
            try:
                checkpoint = self.sign_checkpoint(connection, read_head(connection), kind="manual")
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            self._witness([checkpoint])
        return checkpoint

    def run_serialised(self, work: Callable[[Connection], tuple[T, list[Checkpoint]]]) -> T:
        """Run `work(connection)` holding the chain's lock in one transaction (purge uses it).

        `work` returns its result and the checkpoints it made, witnessed after the commit.
        """
        self._refuse_inside()
        with self._lock, self._engine.connect() as connection:
            begin_serialised(connection)
            try:
                result, made = work(connection)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            self._witness(made)
        return result

    # --- reading --------------------------------------------------------------------------

    def recent(self, limit: int = 100) -> list[AuditEvent]:
        """The newest rows first."""
        with Session(self._engine, expire_on_commit=False) as session:
            statement = sqlmodel.select(AuditEvent).order_by(EVENTS_TABLE.c.seq.desc()).limit(limit)
            return list(session.exec(statement))

    def head(self) -> Head:
        """The current head of the chain."""
        with self._engine.connect() as connection:
            return read_head(connection)
