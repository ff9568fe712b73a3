"""Retention: old events go behind a signed anchor; the rest of the chain still verifies."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from appliance.audit.keys import SigningKey
from appliance.audit.retention import purge
from appliance.audit.store import AuditLog
from appliance.audit.verify import verify
from appliance.audit.witness import FileWitness, read_checkpoints
from tests.unit.audit.conftest import record


def later(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def test_purge_removes_old_events_and_the_rest_still_verifies(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    log = make_log(checkpoint_every=4, witness=FileWitness(witness))
    log.append_many_sync([record(n) for n in range(10)])
    log.append_many_sync([record(n) for n in range(10, 13)])

    # Everything so far is older than 30 days as seen from 31 days on.
    result = purge(log, older_than_days=30, actor="user:admin", now=later(31))

    assert (result.purged, result.through_seq) == (13, 13)
    assert result.anchor is not None and result.anchor.kind == "anchor"
    newest = log.recent(1)[0]
    assert (newest.seq, newest.action, newest.id) == (14, "audit.purged", result.event_id)
    assert newest.details["through_seq"] == 13 and newest.details["purged"] == 13
    report = verify(engine, key=key.verify_key, witnessed=read_checkpoints(witness))
    assert report.ok, report.summary()
    assert (report.first_seq, report.last_seq) == (14, 14)
    assert "anchor" in [c.kind for c in read_checkpoints(witness)]

    log.append_many_sync([record(n) for n in range(5)])
    assert verify(engine, key=key.verify_key, witnessed=read_checkpoints(witness)).ok


def test_nothing_newer_than_the_period_is_purged(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log()
    log.append_many_sync([record(n) for n in range(5)])

    result = purge(log, older_than_days=30)

    assert result.purged == 0 and result.event_id is None
    assert log.head().seq == 5


def test_a_second_purge_continues_from_the_first(
    make_log: Callable[..., AuditLog], engine: Engine, key: SigningKey
) -> None:
    log = make_log()
    log.append_many_sync([record(n) for n in range(5)])
    purge(log, older_than_days=1, now=later(2))
    log.append_many_sync([record(n) for n in range(5)])

    second = purge(log, older_than_days=1, now=later(2))

    assert second.through_seq == 11
    report = verify(engine, key=key.verify_key)
    assert report.ok, report.summary()
    assert report.first_seq == 12


def test_after_a_purge_the_table_is_still_append_only(
    make_log: Callable[..., AuditLog], engine: Engine
) -> None:
    log = make_log()
    log.append_many_sync([record(n) for n in range(5)])
    purge(log, older_than_days=1, now=later(2))
    log.append_sync(record(9))

    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_purge_gate")).scalar() == 0
