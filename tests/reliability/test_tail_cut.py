"""The audit tail cannot be cut or rewritten unnoticed. Issue 17, defect 6.

By default every checkpoint is also written outside the database (a 0600 file in its own 0700
directory, plus syslog when there is one), checkpoints come at least once a minute while events
arrive, `verify` names the events after the last witnessed head as unvouched, and a server whose
append-only triggers are gone or whose chain does not verify from its last checkpoint is not
ready (or refuses to start).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import Engine, text

from appliance.app import create_app
from appliance.audit.keys import load_or_create
from appliance.audit.schedule import maintain
from appliance.audit.store import AuditLog
from appliance.audit.verify import check_integrity, verify_and_record
from appliance.audit.witness import from_setting, read_checkpoints, witness_files
from appliance.config import Settings
from appliance.db.engine import make_engine, upgrade
from appliance.errors import AuditError
from tests.conftest import RunningAppliance
from tests.unit.audit.conftest import drop_guards, record


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _default_log(engine: Engine, tmp_path: Path, **options: Any) -> tuple[AuditLog, Settings]:
    """An audit log wired as the app wires it, with the default witness setting."""
    settings = Settings(data_dir=tmp_path / "data")
    log = AuditLog(
        engine,
        key=load_or_create(tmp_path / "keys" / "audit_signing.pem"),
        witness=from_setting(settings.audit_witness),
        **options,
    )
    return log, settings


def _cut(engine: Engine, above: int) -> None:
    drop_guards(engine)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq > :n"), {"n": above})
        connection.execute(text("DELETE FROM audit_checkpoints WHERE seq > :n"), {"n": above})


def test_the_witness_is_on_by_default_in_a_private_directory(
    engine: Engine, tmp_path: Path
) -> None:
    log, settings = _default_log(engine, tmp_path, checkpoint_every=5)
    for n in range(5):
        log.append_sync(record(n))

    (path,) = witness_files(settings.audit_witness)
    assert path.parent == (tmp_path / "data" / "witness").resolve()
    assert [c.seq for c in read_checkpoints(path)] == [5]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_cutting_the_witnessed_tail_fails_verify_and_the_start_up_check(
    engine: Engine, tmp_path: Path
) -> None:
    log, settings = _default_log(engine, tmp_path, checkpoint_every=5)
    for n in range(12):
        log.append_sync(record(n))
    _cut(engine, above=7)  # rows and checkpoints past 7: the witness still holds seq 10

    report = verify_and_record(
        AuditLog(engine, key=log.key), witness_setting=settings.audit_witness, actor="test"
    )
    assert not report.ok
    assert report.bad_seq == 8
    status = check_integrity(log, witness_setting=settings.audit_witness)
    assert status.startswith("failed")


def test_a_rewritten_unwitnessed_tail_is_reported_as_unvouched(
    engine: Engine, tmp_path: Path
) -> None:
    log, settings = _default_log(engine, tmp_path, checkpoint_every=5)
    for n in range(8):
        log.append_sync(record(n))  # checkpoint at 5; 6..8 not yet vouched for
    _cut(engine, above=6)

    report = verify_and_record(log, witness_setting=settings.audit_witness, actor="test")

    assert report.ok
    assert report.witnessed_seq == 5
    assert report.unvouched == 1  # seq 6 (the audit.verified row is written after the check)
    assert "UNVOUCHED: 1 events after the last witnessed head (seq 5)" in report.summary()


def test_without_any_witness_every_event_is_unvouched(engine: Engine, tmp_path: Path) -> None:
    log = AuditLog(engine, key=load_or_create(tmp_path / "k.pem"), checkpoint_every=5)
    for n in range(6):
        log.append_sync(record(n))

    report = verify_and_record(log, witness_setting="none", actor="test")

    assert report.ok and report.unvouched == 6 and report.witnessed_seq is None


def test_missing_triggers_fail_the_integrity_check(engine: Engine, tmp_path: Path) -> None:
    log, settings = _default_log(engine, tmp_path)
    log.append_sync(record(1))
    assert check_integrity(log, witness_setting=settings.audit_witness) == "ok"

    drop_guards(engine)

    status = check_integrity(log, witness_setting=settings.audit_witness)
    assert status.startswith("failed: append-only triggers missing")


async def test_checkpoints_come_at_least_every_minute_while_events_arrive(
    engine: Engine, tmp_path: Path
) -> None:
    defaults = Settings(data_dir=tmp_path / "data")
    assert defaults.audit_checkpoint_minutes * 60 + 5 <= 60  # interval plus one tick
    log, _ = _default_log(engine, tmp_path, checkpoint_every=1000, checkpoint_minutes=0.5 / 60)
    log.append_sync(record(1))
    with anyio.move_on_after(1.5):
        await maintain(log, retention_days=0)
    log.append_sync(record(2))
    with anyio.move_on_after(1.5):
        await maintain(log, retention_days=0)

    with engine.connect() as connection:
        seqs = [int(r[0]) for r in connection.execute(text("SELECT seq FROM audit_checkpoints"))]
    assert seqs == [1, 2]


def test_a_server_with_its_triggers_dropped_is_not_ready(
    start_appliance: Any,
) -> None:
    app: RunningAppliance = start_appliance()
    drop_guards(app.services.engine)

    again: RunningAppliance = start_appliance(wait_ready=False)
    response = httpx.get(f"{again.url}/readyz", timeout=30)

    assert response.status_code == 503
    assert response.json()["checks"]["audit"].startswith("failed: append-only triggers")


def test_refuse_mode_stops_start_up(make_settings: Any, database_url: str) -> None:
    settings = make_settings(database_url=database_url, audit_integrity_check="refuse")
    upgrade(database_url)
    engine = make_engine(database_url)
    drop_guards(engine)
    engine.dispose()

    with pytest.raises(AuditError, match="append-only triggers missing"):
        create_app(settings, backends=[])
