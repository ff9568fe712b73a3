"""`appliance audit ...` against a real database: pubkey, verify, export, purge, checkpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from appliance.__main__ import main
from appliance.audit.keys import VerifyKey
from appliance.audit.store import EVENTS_TABLE, AuditLog, AuditRecord
from appliance.config import Settings
from appliance.db.engine import make_engine, upgrade
from tests.unit.audit.conftest import drop_guards, record


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Engine]
) -> Settings:
    for key, value in {
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_DATABASE_URL": database_url,
        "APPLIANCE_AUDIT_WITNESS": str(tmp_path / "witness.jsonl"),
        "APPLIANCE_AUDIT_CHECKPOINT_EVERY": "5",
    }.items():
        monkeypatch.setenv(key, value)
    upgrade(database_url)
    settings = Settings()
    engines.append(make_engine(settings.resolved_database_url))
    return settings


def fill(settings: Settings, count: int, engines: list[Engine]) -> AuditLog:
    log = AuditLog.from_settings(settings, engines[0])
    for n in range(count):
        log.append_sync(record(n))
    return log


def test_pubkey_prints_the_pem_of_the_key_in_the_data_dir(
    settings: Settings, engines: list[Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "pubkey"]) == 0
    out, err = capsys.readouterr()

    key = VerifyKey.from_pem(out)
    assert f"key id {key.key_id}" in err
    assert oct(settings.resolved_audit_key_file.stat().st_mode & 0o777) == "0o600"


def test_verify_says_ok_and_then_names_the_first_bad_event(
    settings: Settings, engines: list[Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    log = fill(settings, 12, engines)
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("OK: 12 events")

    drop_guards(log.engine)
    with log.engine.begin() as connection:
        connection.execute(
            update(EVENTS_TABLE).where(EVENTS_TABLE.c.seq == 7).values(actor="user:other")
        )

    assert main(["audit", "verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["bad_seq"]) == (False, 7)


def test_verify_against_a_checkpoint_file_kept_elsewhere(
    settings: Settings, engines: list[Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = fill(settings, 3, engines)
    assert main(["audit", "checkpoint"]) == 0
    kept = tmp_path / "kept-by-the-auditor.json"
    kept.write_text(capsys.readouterr().out)
    pem = tmp_path / "pub.pem"
    pem.write_text(log.verify_key.pem())  # type: ignore[union-attr]

    assert main(["audit", "verify", "--checkpoint", str(kept), "--pubkey", str(pem)]) == 0
    assert "2 witnessed" in capsys.readouterr().out  # the witness file and the kept copy

    forged = json.loads(kept.read_text()) | {"seq": 2}
    kept.write_text(json.dumps(forged))
    assert main(["audit", "verify", "--checkpoint", str(kept)]) == 1
    assert "signature" in capsys.readouterr().out


def test_export_writes_the_filtered_events_and_is_audited(
    settings: Settings, engines: list[Engine], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = fill(settings, 4, engines)
    log.append_sync(AuditRecord(actor="user:9", action="auth.login", outcome="ok"))
    out = tmp_path / "export.jsonl"

    assert main(["audit", "export", "--action", "auth.*", "--output", str(out)]) == 0

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["action"] for e in lines] == ["auth.login"]
    newest = log.recent(1)[0]
    assert newest.action == "audit.exported" and newest.actor.startswith("cli")


def test_export_with_a_bad_time_fails_with_a_message(
    settings: Settings, engines: list[Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "--since", "yesterday"]) == 1
    assert "--since" in capsys.readouterr().err


def test_purge_needs_a_period_and_keeps_recent_events(
    settings: Settings, engines: list[Engine], capsys: pytest.CaptureFixture[str]
) -> None:
    log = fill(settings, 3, engines)
    assert main(["audit", "purge"]) == 2  # audit_retention_days is 0: keep forever

    assert main(["audit", "purge", "--older-than", "30"]) == 0
    assert "nothing older than 30 days" in capsys.readouterr().out
    assert log.head().seq == 3
