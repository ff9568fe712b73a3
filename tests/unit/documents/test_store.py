"""The document store's audited writes: the row and its event commit together or not at all.

On SQLite and PostgreSQL; the same under `kill -9` is in
tests/integration/audit/test_deletion_crash.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from appliance.audit.store import EVENTS_TABLE, AuditLog, AuditRecord
from appliance.db.models import utcnow
from appliance.documents.crypto import Sealer
from appliance.documents.extract import Extracted
from appliance.documents.store import DocumentInfo, DocumentStore


@pytest.fixture
def store(engine: Engine, tmp_path: Path) -> DocumentStore:
    return DocumentStore(engine, Sealer.from_keys_dir(tmp_path / "keys"))


def add(store: DocumentStore, **audited: object) -> DocumentInfo:
    now = utcnow()
    return store.add(
        owner="user:1",
        name="memo.txt",
        data=b"Quarterly numbers",
        extracted=Extracted("text", "Quarterly numbers"),
        policy=None,
        created_at=now,
        expires_at=now + timedelta(days=1),
        **audited,  # type: ignore[arg-type]
    )


def event(action: str) -> Callable[[DocumentInfo], AuditRecord]:
    return lambda info: AuditRecord(actor="user:1", action=action, outcome="ok", target=info.id)


def actions(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(EVENTS_TABLE.c.action, EVENTS_TABLE.c.target).order_by(EVENTS_TABLE.c.seq)
        )
        return [(a, t) for a, t in rows]


def test_upload_and_deletion_each_commit_with_their_event(
    store: DocumentStore,
    make_log: Callable[..., AuditLog],
    engine: Engine,
) -> None:
    log = make_log()
    info = add(store, audit=log, event=event("document.uploaded"))
    assert store.get("user:1", info.id) is not None

    assert store.delete("user:2", info.id, audit=log, event=event("document.deleted")) is None
    assert store.delete("user:1", info.id, audit=log, event=event("document.deleted")) == info

    assert store.get("user:1", info.id) is None
    assert actions(engine) == [("document.uploaded", info.id), ("document.deleted", info.id)]


def test_a_deletion_whose_event_fails_is_rolled_back(
    store: DocumentStore,
    make_log: Callable[..., AuditLog],
    engine: Engine,
) -> None:
    log = make_log()
    info = add(store)

    with pytest.raises(ValueError, match="unknown audit event"):
        store.delete("user:1", info.id, audit=log, event=event("document.shredded"))

    assert store.get("user:1", info.id) == info
    assert actions(engine) == []
