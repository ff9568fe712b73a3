"""Crash safety of audited deletions: `kill -9` at each step of a sweep and of a user deletion.

A child process removes content the trail records (expired history or documents, or one an owner
deletes) and kills itself with SIGKILL at a chosen step: once it holds the chain's lock, after
the content's DELETE, after the audit INSERT, inside the commit, or before the scrub. The hook is
a SQLAlchemy event listener the child installs on its own engine, so product code carries none.

Afterwards every content row and its audit event are both there or both gone, the chain (with its
checkpoints and the witness file) verifies, and the next sweep, in a new process as after a
restart, removes what is left, scrubs the files, and adds no second event for anything.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from appliance.audit.keys import load_or_create
from appliance.audit.store import EVENTS_TABLE, AuditLog, AuditRecord
from appliance.audit.verify import verify
from appliance.audit.witness import FileWitness, read_checkpoints
from appliance.auth.actor import Actor
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine, upgrade
from appliance.documents.crypto import Sealer
from appliance.documents.extract import Extracted
from appliance.documents.models import DocumentRow
from appliance.documents.service import Documents
from appliance.documents.store import DocumentStore
from appliance.history.models import HistoryRow
from appliance.history.store import History

OWNER = "user:owner"
SWEPT = 3  # expired rows a sweep meets; it is killed while on the second

CHILD = textwrap.dedent(
    """
    import os, re, signal, sys
    from pathlib import Path
    from types import SimpleNamespace

    from sqlalchemy import event

    from appliance.audit.keys import load_or_create
    from appliance.audit.store import AuditLog
    from appliance.audit.witness import FileWitness
    from appliance.db.engine import make_engine
    from appliance.documents.crypto import Sealer
    from appliance.documents.service import Documents
    from appliance.documents.store import DocumentStore
    from appliance.history.store import History

    url, keys, witness, operation, target, when, pattern, nth = sys.argv[1:9]
    engine = make_engine(url)
    seen = {"hits": 0, "audited": False}


    def hit() -> None:
        seen["hits"] += 1
        if seen["hits"] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)


    if when in ("before", "after"):
        wanted = re.compile(pattern, re.IGNORECASE)

        @event.listens_for(engine, f"{when}_cursor_execute")
        def on_statement(conn, cursor, statement, parameters, context, executemany):
            if wanted.search(statement):
                hit()
    else:  # "commit": the commit of a transaction that appended to the trail, before it is sent

        @event.listens_for(engine, "after_cursor_execute")
        def on_statement(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith("INSERT INTO audit_events"):
                seen["audited"] = True

        @event.listens_for(engine, "commit")
        def on_commit(conn):
            if seen["audited"]:
                seen["audited"] = False
                hit()

    audit = AuditLog(
        engine,
        key=load_or_create(Path(keys) / "audit_signing.pem"),
        checkpoint_every=2,
        witness=FileWitness(Path(witness)),
    )
    sealer = Sealer.from_keys_dir(Path(keys))
    if operation.startswith("history"):
        history = History(engine, sealer, audit=audit)
        if operation == "history-sweep":
            history.sweep_sync()
        else:
            history.delete_sync(target, sys.argv[9], role="staff", source="127.0.0.1")
    else:
        # Sweeping and deleting need neither policies nor upload limits.
        documents = Documents(
            store=DocumentStore(engine, sealer),
            audit=audit,
            policies=None,
            limits=None,
            default_retention=None,
        )
        if operation == "document-sweep":
            documents.sweep_sync()
        else:
            actor = SimpleNamespace(id=target, role="staff", source="127.0.0.1")
            documents.delete_sync(actor, sys.argv[9], request_id=None)
    print("finished without being killed", file=sys.stderr)
    """
)

LOCK = r"^(BEGIN IMMEDIATE|SELECT pg_advisory_xact_lock)"
STEPS = {
    # step: (when, statement pattern); a sweep is killed on the step's second occurrence
    "holding-the-lock": ("after", LOCK),
    "content-deleted": ("after", r"^DELETE FROM (history_entries|documents)\b"),
    "event-inserted": ("after", r"^INSERT INTO audit_events\b"),
    "committing": ("commit", ""),
    "scrubbing": ("before", r"wal_checkpoint|^VACUUM"),
}


@dataclass(frozen=True)
class Kind:
    """What is deleted: the table, and the events of a sweep and of an owner's deletion."""

    table: type[HistoryRow] | type[DocumentRow]
    expired: str
    deleted: str


KINDS = {
    "history": Kind(HistoryRow, "history.expired", "history.deleted"),
    "document": Kind(DocumentRow, "document.expired", "document.deleted"),
}


@dataclass
class Box:
    """The database, keys and witness of one test, and the appliance pieces the parent uses."""

    url: str
    engine: Engine
    keys: Path
    witness: Path
    audit: AuditLog
    sealer: Sealer


@pytest.fixture
def box(database_url: str, tmp_path: Path) -> Iterator[Box]:
    upgrade(database_url)
    engine = make_engine(database_url)
    keys, witness = tmp_path / "keys", tmp_path / "witness.jsonl"
    audit = AuditLog(
        engine,
        key=load_or_create(keys / "audit_signing.pem"),
        checkpoint_every=2,
        witness=FileWitness(witness),
    )
    for n in range(3):  # a trail to continue
        audit.append_sync(AuditRecord(actor=f"user:{n}", action="auth.login", outcome="ok"))
    yield Box(database_url, engine, keys, witness, audit, Sealer.from_keys_dir(keys))
    engine.dispose()


def seed(box: Box, kind: str, *, count: int, expired: bool) -> dict[str, bytes]:
    """`count` rows of `kind` owned by OWNER; returns id -> a slice of each one's ciphertext."""
    now = datetime.now(UTC)
    expires = now - timedelta(minutes=1) if expired else now + timedelta(days=1)
    probes: dict[str, bytes] = {}
    for n in range(count):
        text = f"Confidential note {n} for Jane Smith, jane.smith@example.com."
        if kind == "history":
            entry_id = uuid.uuid4().hex
            sealed = box.sealer.seal(text.encode(), bound_to=f"history:{entry_id}")
            with Session(box.engine) as session:
                session.add(
                    HistoryRow(
                        id=entry_id,
                        owner=OWNER,
                        task="redact",
                        policy="default@test",
                        chars=len(text),
                        created_at=now - timedelta(days=2),
                        expires_at=expires,
                        content_sealed=sealed,
                    )
                )
                session.commit()
        else:
            info = DocumentStore(box.engine, box.sealer).add(
                owner=OWNER,
                name=f"note-{n}.txt",
                data=text.encode(),
                extracted=Extracted("text", text),
                policy=None,
                created_at=now - timedelta(days=2),
                expires_at=expires,
            )
            entry_id = info.id
            with Session(box.engine) as session:
                found = session.get(DocumentRow, entry_id)
                assert found is not None
                sealed = found.text_sealed
        probes[entry_id] = sealed[12:44]
    return probes


def present(box: Box, kind: str) -> set[str]:
    table = KINDS[kind].table.__table__  # type: ignore[union-attr]
    with box.engine.connect() as connection:
        return {str(i) for i in connection.execute(select(table.c.id)).scalars()}


def events(box: Box, action: str) -> Counter[str]:
    with box.engine.connect() as connection:
        targets = connection.execute(
            select(EVENTS_TABLE.c.target).where(EVENTS_TABLE.c.action == action)
        ).scalars()
        return Counter(str(t) for t in targets)


def assert_both_or_neither(box: Box, kind: str, ids: set[str], action: str) -> set[str]:
    """Each row is there with no event, or gone with exactly one; returns the ids gone."""
    there, recorded = present(box, kind), events(box, action)
    for entry_id in ids:
        if entry_id in there:
            assert recorded[entry_id] == 0, f"{entry_id}: still there, yet the trail says removed"
        else:
            assert recorded[entry_id] == 1, f"{entry_id}: removed without its one audit event"
    report = verify(box.engine, key=box.audit.verify_key, witnessed=read_checkpoints(box.witness))
    assert report.ok, report.summary()
    return ids - there


def assert_scrubbed(box: Box, probes: dict[str, bytes], gone: set[str]) -> None:
    """On SQLite, no byte of removed ciphertext is left in the database or its log."""
    if box.engine.dialect.name != "sqlite":
        return  # PostgreSQL: VACUUM ran; its files are not ours to read
    path = Path(str(box.engine.url.database))
    files = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert probes.keys() >= gone
    assert all(probes[entry_id] not in files for entry_id in gone)


def run_child(box: Box, operation: str, step: str, *extra: str) -> None:
    when, pattern = STEPS[step]
    nth = "1" if step == "scrubbing" or not operation.endswith("sweep") else "2"
    where = [box.url, str(box.keys), str(box.witness)]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *where, operation, OWNER, when, pattern, nth, *extra],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]


def restarted(box: Box, kind: str) -> History | Documents:
    """The sweeping service as a newly started process builds it."""
    if kind == "history":
        return History(box.engine, box.sealer, audit=box.audit)
    return Documents(
        store=DocumentStore(box.engine, box.sealer),
        audit=box.audit,
        policies=None,  # type: ignore[arg-type]  # unused by sweeps and deletions
        limits=None,  # type: ignore[arg-type]
        default_retention=timedelta(hours=1),
    )


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_sweep_killed_at_any_step_leaves_content_and_trail_in_step(
    box: Box, kind: str, step: str
) -> None:
    probes = seed(box, kind, count=SWEPT, expired=True)
    kept = seed(box, kind, count=1, expired=False)
    ids = set(probes)

    run_child(box, f"{kind}-sweep", step)

    gone = assert_both_or_neither(box, kind, ids, KINDS[kind].expired)
    # Killed on the second row: the first row's transaction committed, the second's did not.
    assert len(gone) == (SWEPT if step == "scrubbing" else 1)

    service = restarted(box, kind)
    service.sweep_sync()

    assert assert_both_or_neither(box, kind, ids, KINDS[kind].expired) == ids
    assert present(box, kind) == set(kept)
    assert_scrubbed(box, probes, ids)


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_an_owners_deletion_killed_at_any_step_leaves_content_and_trail_in_step(
    box: Box, kind: str, step: str
) -> None:
    probes = seed(box, kind, count=1, expired=False)
    [entry_id] = probes

    run_child(box, f"{kind}-delete", step, entry_id)

    action = KINDS[kind].deleted
    gone = assert_both_or_neither(box, kind, {entry_id}, action)
    assert gone == ({entry_id} if step == "scrubbing" else set())

    service = restarted(box, kind)
    if not gone:  # the owner, told nothing, deletes again
        if isinstance(service, History):
            service.delete_sync(OWNER, entry_id, role="staff", source=None)
        else:
            service.delete_sync(Actor(OWNER, "staff"), entry_id, request_id=None)
    else:  # the deletion committed; the restarted process's first sweep finishes the scrub
        assert service.sweep_sync() in (0, [])

    assert assert_both_or_neither(box, kind, {entry_id}, action) == {entry_id}
    assert_scrubbed(box, probes, {entry_id})
