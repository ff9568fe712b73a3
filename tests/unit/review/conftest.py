"""A migrated database of each kind, a sealer and an audit log for the review queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from appliance.audit.keys import load_or_create
from appliance.audit.store import AuditLog
from appliance.db.engine import make_engine, upgrade
from appliance.documents.crypto import Sealer
from appliance.review.queue import ReviewQueue


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The database at the latest revision."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def queue(engine: Engine, tmp_path: Path) -> ReviewQueue:
    """A queue that takes outputs below 0.6 confidence."""
    audit = AuditLog(engine, key=load_or_create(tmp_path / "keys" / "audit_signing.pem"))
    return ReviewQueue(
        engine,
        Sealer(b"k" * 32),
        audit=audit,
        digest_key=b"d" * 32,
        confidence_threshold=0.6,
    )
