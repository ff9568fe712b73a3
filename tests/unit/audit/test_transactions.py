"""A change and the audit event recording it commit together: `transaction()` and `within=`.

On SQLite and PostgreSQL: both commit or neither does, the chain stays one line with no fork and
no gap when many writers do this at once, and checkpoints are still made and witnessed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from appliance.audit.keys import SigningKey
from appliance.audit.store import EVENTS_TABLE, AuditLog, AuditRecord
from appliance.audit.verify import verify
from appliance.audit.witness import FileWitness, read_checkpoints
from appliance.history.models import HistoryRow
from tests.unit.audit.test_store import assert_one_linear_chain


def row(entry_id: str | None = None) -> HistoryRow:
    now = datetime.now(UTC)
    return HistoryRow(
        id=entry_id or uuid.uuid4().hex,
        owner="user:1",
        task="redact",
        policy="default@test",
        chars=3,
        created_at=now,
        expires_at=now + timedelta(days=1),
        content_sealed=b"sealed",
    )


def deleted(entry_id: str) -> AuditRecord:
    return AuditRecord(actor="user:1", action="history.deleted", outcome="ok", target=entry_id)


def stored(engine: Engine) -> set[str]:
    table = HistoryRow.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return {str(i) for i in connection.execute(select(table.c.id)).scalars()}


def targets(engine: Engine) -> list[str | None]:
    with engine.connect() as connection:
        found = connection.execute(select(EVENTS_TABLE.c.target).order_by(EVENTS_TABLE.c.seq))
        return [t for (t,) in found]


def test_a_change_and_its_event_commit_together(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log()
    log.append_sync(AuditRecord(actor="user:1", action="auth.login", outcome="ok"))
    with Session(engine) as session:
        session.add(row("a"))
        session.add(row("b"))
        session.commit()

    with log.transaction() as tx:
        found = tx.session.get(HistoryRow, "a")
        assert found is not None
        tx.session.delete(found)
        event_id = tx.append(deleted("a"))

    assert stored(engine) == {"b"}
    assert targets(engine) == [None, "a"]
    assert log.recent(1)[0].id == event_id
    assert verify(engine, key=key.verify_key).ok


def test_a_failure_inside_rolls_back_the_change_and_the_event(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log()
    with Session(engine) as session:
        session.add(row("a"))
        session.commit()

    with pytest.raises(RuntimeError, match="disk on fire"), log.transaction() as tx:
        found = tx.session.get(HistoryRow, "a")
        assert found is not None
        tx.session.delete(found)
        tx.append(deleted("a"))
        raise RuntimeError("disk on fire")

    assert stored(engine) == {"a"}
    assert targets(engine) == []
    # The chain goes on from where it was: no gap where the rolled-back event was.
    log.append_sync(deleted("b"))
    assert_one_linear_chain(engine, 1)
    assert verify(engine, key=key.verify_key).ok


def test_a_bad_event_rolls_back_the_change(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    with Session(engine) as session:
        session.add(row("a"))
        session.commit()

    with pytest.raises(ValueError, match="unknown audit event"), log.transaction() as tx:
        found = tx.session.get(HistoryRow, "a")
        assert found is not None
        tx.session.delete(found)
        tx.append(AuditRecord(actor="user:1", action="history.vanished", outcome="ok"))

    assert stored(engine) == {"a"}


def test_appending_outside_the_open_transaction_is_refused_not_deadlocked(
    make_log: Callable[..., AuditLog],
) -> None:
    log = make_log()
    with pytest.raises(RuntimeError, match=r"tx\.append"), log.transaction():
        log.append_sync(deleted("a"))
    with pytest.raises(RuntimeError, match="already open"), log.transaction(), log.transaction():
        pass
    log.append_sync(deleted("b"))  # the lock was released
    assert log.head().seq == 1


def test_transactions_make_checkpoints_and_witness_them_after_the_commit(
    engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    log = AuditLog(engine, key=key, checkpoint_every=3, witness=FileWitness(witness))
    for n in range(7):
        with log.transaction() as tx:
            tx.session.add(row(f"r{n}"))
            tx.append(AuditRecord(actor="user:1", action="auth.login", outcome="ok"))

    assert [c.seq for c in read_checkpoints(witness)] == [3, 6]
    report = verify(engine, key=key.verify_key, witnessed=read_checkpoints(witness))
    assert report.ok and report.checkpoints == 2, report.summary()


def test_within_joins_the_callers_transaction(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log()
    with Session(engine) as session:
        session.add(row("kept"))
        log.append_sync(deleted("kept"), within=session)
        session.rollback()
    assert stored(engine) == set() and targets(engine) == []

    with Session(engine) as session:
        session.add(row("a"))
        log.append_many_sync([deleted("a"), deleted("a2")], within=session)
        session.commit()
    with engine.connect() as connection:
        log.append_sync(deleted("c"), within=connection)
        connection.commit()

    assert stored(engine) == {"a"}
    assert targets(engine) == ["a", "a2", "c"]
    assert verify(engine, key=key.verify_key).ok


def test_many_writers_joining_their_own_transactions_make_one_chain(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log(checkpoint_every=5)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                entry_id = f"w{n}-{i}"
                if i % 2:
                    with Session(engine) as session:
                        session.add(row(entry_id))  # a write first, then the event joins
                        log.append_sync(deleted(entry_id), within=session)
                        session.commit()
                else:
                    with log.transaction() as tx:
                        tx.session.add(row(entry_id))
                        tx.append(deleted(entry_id))
                log.append_sync(AuditRecord(actor=f"user:{n}", action="auth.login", outcome="ok"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert_one_linear_chain(engine, 120)
    assert len(stored(engine)) == 60
    report = verify(engine, key=key.verify_key)
    assert report.ok, report.summary()
