"""Content at rest and in the trail. Issue 17, defect 5: batch job params are sealed like
items, the audit trail and the log keep a route template and a keyed hash of the path
parameters (never the raw path), and the database files are readable by the owner only."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from appliance.app import create_app
from appliance.auth import apikeys
from appliance.db.engine import upgrade
from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance

CANARY = "john.smith@example.com-536-22-1234"


def test_batch_job_params_are_sealed_at_rest(appliance: RunningAppliance, tmp_path: Path) -> None:
    question = f"What did {CANARY} sign?"
    response = appliance.client.post(
        "/api/v1/batches",
        files={"file": ("items.jsonl", b'{"text": "The contract was signed."}\n')},
        data={"task": "ask", "params": f'{{"question": "{question}"}}'},
        timeout=60,
    )
    assert response.status_code in (200, 201, 202), response.text
    job = response.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if appliance.client.get(f"/api/v1/batches/{job}").json()["status"] == "completed":
            break
        time.sleep(0.5)
    else:
        pytest.fail("the batch did not complete")

    engine = appliance.services.engine
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT params FROM batch_jobs WHERE id = ?"
            if engine.dialect.name == "sqlite"
            else "SELECT params::text FROM batch_jobs WHERE id = %s",
            (job,),
        ).scalar_one()
    assert CANARY not in str(stored)
    assert "sealed" in str(stored)
    if engine.dialect.name == "sqlite":
        database = Path(str(engine.url.database))
        for path in database.parent.glob(f"{database.name}*"):
            assert CANARY.encode() not in path.read_bytes(), path.name


def test_the_trail_and_the_log_keep_the_route_template_not_the_path(
    start_appliance: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app: RunningAppliance = start_appliance()
    _, limited = apikeys.create(
        app.services.engine,
        app.server.app.state.identity.pepper,
        name="no-admin",
        scopes=["chat"],
    )
    caplog.set_level(logging.INFO, logger="appliance.http")

    response = app.client.delete(
        f"/api/v1/admin/keys/{CANARY}", headers={"Authorization": f"Bearer {limited}"}
    )

    assert response.status_code == 403, response.text
    with Session(app.services.engine) as session:
        rows = list(session.exec(select(AuditEvent).where(AuditEvent.action == "apikey.denied")))
    assert rows, "the refusal was not audited"
    for row in rows:
        assert CANARY not in (row.target or "")
        assert "536-22-1234" not in repr(row.model_dump())
    assert rows[-1].target is not None and rows[-1].target.startswith("/api/v1/admin/keys/{")
    assert "#" in rows[-1].target
    logged = [r for r in caplog.records if r.name == "appliance.http"]
    assert logged, "no request log line"
    for record in logged:
        assert CANARY not in str(record.__dict__)


def test_database_files_are_private(make_settings: Any, tmp_path: Path) -> None:
    """The default layout: `<data_dir>/appliance.db` and its WAL files, mode 0600, even when
    the migration created the file first under a permissive umask."""
    settings = make_settings(database_url=None)
    previous = os.umask(0o022)
    try:
        upgrade(settings.resolved_database_url)
        app = create_app(settings, backends=[])
        with app.state.appliance.engine.begin() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM audit_events")
        files = sorted((tmp_path / "data").glob("appliance.db*"))
        assert {p.name for p in files} >= {"appliance.db", "appliance.db-wal"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, path.stat().st_mode)
        app.state.appliance.engine.dispose()
    finally:
        os.umask(previous)
