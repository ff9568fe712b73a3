"""`appliance users set-reviewer`: grants and withdraws the permission, audited; staff only."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from appliance.__main__ import main
from appliance.auth import accounts
from appliance.db.engine import make_engine, session_scope, upgrade
from appliance.db.models import AuditEvent


def test_set_reviewer_from_the_command_line(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("APPLIANCE_DATABASE_URL", database_url)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path / "data"))
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        accounts.create_user(engine, username="nurse", role="staff")
        accounts.create_user(engine, username="boss", role="admin")
        assert main(["users", "set-reviewer", "nurse", "on"]) == 0
        assert "nurse is now a reviewer" in capsys.readouterr().out
        assert accounts.find_user(engine, "nurse").reviewer
        assert main(["users", "set-reviewer", "boss", "on"]) == 1
        assert "for staff accounts" in capsys.readouterr().err
        assert not accounts.find_user(engine, "boss").reviewer
        assert main(["users", "set-reviewer", "nurse", "off"]) == 0
        assert not accounts.find_user(engine, "nurse").reviewer
        # A role change away from staff drops the permission with it.
        assert main(["users", "set-reviewer", "nurse", "on"]) == 0
        assert main(["users", "set-role", "nurse", "auditor"]) == 0
        assert not accounts.find_user(engine, "nurse").reviewer
        with session_scope(engine) as session:
            events = session.exec(
                select(AuditEvent).where(AuditEvent.action == "user.reviewer_changed")
            ).all()
            assert [e.outcome for e in events] == ["granted", "revoked", "granted"]
            assert all(e.actor.startswith("cli") for e in events)
    finally:
        engine.dispose()
