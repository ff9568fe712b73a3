"""Fixtures for the audit trail: a migrated database of each kind, a signing key, a log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from appliance.audit.keys import SigningKey, load_or_create
from appliance.audit.store import AuditLog, AuditRecord
from appliance.db.engine import make_engine, upgrade


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The database at the latest revision."""
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create(tmp_path / "keys" / "audit_signing.pem")


@pytest.fixture
def make_log(engine: Engine, key: SigningKey) -> Callable[..., AuditLog]:
    def build(**options: Any) -> AuditLog:
        return AuditLog(engine, key=key, **options)

    return build


def record(n: int = 0, **overrides: Any) -> AuditRecord:
    """A plausible completion event, varied by `n`."""
    values: dict[str, Any] = {
        "actor": f"user:{n % 3}",
        "action": "completion.redacted" if n % 2 else "completion.allowed",
        "outcome": "redacted" if n % 2 else "allowed",
        "source": "127.0.0.1",
        "role": "staff",
        "policy": "default@abc123",
        "entity_counts": {"PERSON": n % 4, "EMAIL_ADDRESS": 1} if n % 2 else {},
        "model": "smollm2-135m",
        "tier": "small",
        "request_id": f"req-{n}",
        "status_code": 200,
    }
    values.update(overrides)
    return AuditRecord(**values)


def drop_guards(engine: Engine) -> None:
    """Remove the append-only triggers, as someone with direct database access could."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            connection.execute(text("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER"))
        else:
            for name in (
                "audit_events_no_update",
                "audit_events_no_delete",
                "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete",
            ):
                connection.execute(text(f"DROP TRIGGER {name}"))
