"""Removing retained content: each row with its event in one commit, the scrub after it.

On SQLite and PostgreSQL: an owner's deletion and the sweep write one event per row, a refused
deletion writes none, and a scrub that fails (or never ran, as after a crash) is done by the
next sweep without a second event for anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from appliance.audit.store import EVENTS_TABLE, AuditLog
from appliance.audit.verify import verify
from appliance.documents.crypto import Sealer
from appliance.errors import NotFound
from appliance.history import store as history_store
from appliance.history.models import HistoryRow
from appliance.history.store import History

OWNER = "user:1"


@pytest.fixture
def history(make_log: Callable[..., AuditLog], engine: Engine, tmp_path: Path) -> History:
    return History(engine, Sealer.from_keys_dir(tmp_path / "keys"), audit=make_log())


def add(history: History, *, expired: bool, owner: str = OWNER) -> str:
    now = datetime.now(UTC)
    entry_id = uuid.uuid4().hex
    row = HistoryRow(
        id=entry_id,
        owner=owner,
        task="redact",
        policy="default@test",
        chars=5,
        created_at=now - timedelta(days=2),
        expires_at=now + (timedelta(minutes=-1) if expired else timedelta(days=1)),
        content_sealed=history.sealer.seal(b"hello", bound_to=f"history:{entry_id}"),
    )
    with history.audit.transaction() as tx:  # any session will do; this one is at hand
        tx.session.add(row)
    return entry_id


def trail(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        found = connection.execute(
            select(EVENTS_TABLE.c.action, EVENTS_TABLE.c.target).order_by(EVENTS_TABLE.c.seq)
        )
        return [(a, t) for a, t in found]


def kept(engine: Engine) -> set[str]:
    table = HistoryRow.__table__  # type: ignore[attr-defined]
    with engine.connect() as connection:
        return {str(i) for i in connection.execute(select(table.c.id)).scalars()}


def test_the_owner_deletes_with_one_event_and_nobody_else_can(
    history: History, engine: Engine
) -> None:
    mine, other = add(history, expired=False), add(history, expired=False, owner="user:2")

    with pytest.raises(NotFound):
        history.delete_sync(OWNER, other, role="staff", source=None)
    history.delete_sync(OWNER, mine, role="staff", source="127.0.0.1")
    with pytest.raises(NotFound):
        history.delete_sync(OWNER, mine, role="staff", source=None)

    assert kept(engine) == {other}
    assert trail(engine) == [("history.deleted", mine)]


def test_the_sweep_removes_expired_rows_each_with_its_event(
    history: History, engine: Engine
) -> None:
    old = {add(history, expired=True) for _ in range(3)}
    fresh = add(history, expired=False)

    assert history.sweep_sync() == 3
    assert history.sweep_sync() == 0

    assert kept(engine) == {fresh}
    assert sorted(trail(engine)) == sorted(("history.expired", i) for i in old)
    assert verify(engine, key=history.audit.verify_key).ok


def test_a_failed_scrub_is_done_by_the_next_sweep(
    history: History, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    scrubbed: list[str] = []

    def failing(_: Engine, table: str) -> None:
        raise OSError("disk busy")

    history.sweep_sync()  # a new History scrubs on its first sweep (a crash may precede it)
    entry_id = add(history, expired=False)
    monkeypatch.setattr(history_store, "scrub", failing)
    history.delete_sync(OWNER, entry_id, role="staff", source=None)  # deleted, and audited

    assert kept(engine) == set() and trail(engine) == [("history.deleted", entry_id)]
    monkeypatch.setattr(history_store, "scrub", lambda _, table: scrubbed.append(table))
    assert history.sweep_sync() == 0
    assert history.sweep_sync() == 0
    assert scrubbed == ["history_entries"]  # once: the retry, then nothing was pending
    assert trail(engine) == [("history.deleted", entry_id)]
