"""Rate limits and the failed-key throttle are global: three `appliance serve` replicas on one
PostgreSQL, a client going round them, and the limit holds as it would on one server."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from appliance.db.engine import make_engine
from appliance.db.models import AuditEvent
from tests.support.replicas import Replicas
from tests.support.windows import room_in_window

pytestmark = pytest.mark.postgresql

LIMIT = 12
FAILURES = 6


def _throttled_rows(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as session:
        statement = select(AuditEvent).where(AuditEvent.action == "auth.throttled")
        return list(session.exec(statement))


def test_a_limit_and_a_throttle_hold_across_three_replicas(
    start_replicas: Callable[..., Replicas],
) -> None:
    replicas = start_replicas(
        3, inference_rate_per_minute=str(LIMIT), auth_failures_per_minute=str(FAILURES)
    )
    key = replicas.key("pii")
    clients = replicas.clients(key)
    engine = make_engine(replicas.env["APPLIANCE_DATABASE_URL"])
    try:
        room_in_window(30)  # every request below in one window
        # One key from one address, round robin over the replicas, twice the limit.
        answers: list[tuple[int, int, str | None]] = []
        for n in range(2 * LIMIT):
            response = clients[n % 3].post("/api/v1/pii/analyze", json={"text": "hello"})
            answers.append((n % 3, response.status_code, response.headers.get("Retry-After")))
        accepted = [replica for replica, status, _ in answers if status == 200]
        refused = [(status, wait) for _, status, wait in answers if status != 200]
        assert len(accepted) == LIMIT  # exactly: the requests came one after another
        assert set(accepted) == {0, 1, 2}
        assert {status for status, _ in refused} == {429}
        assert all(wait is not None and 1 <= int(wait) <= 60 for _, wait in refused)
        assert [status for _, status, _ in answers[LIMIT:]] == [429] * LIMIT

        # Bad keys from the same address, round robin: the throttle counts them all together.
        statuses = []
        for n in range(3 * FAILURES):
            with httpx.Client(base_url=replicas.urls[n % 3], timeout=60) as client:
                response = client.get(
                    "/api/v1/tasks", headers={"Authorization": f"Bearer apl_bad{n}_secret{n}"}
                )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1
        assert statuses == [401] * FAILURES + [429] * (2 * FAILURES)

        # Each replica refused in the window and tries to report it when it ends: one row.
        deadline = time.monotonic() + 60 - time.time() % 60 + 20
        while time.monotonic() < deadline and not _throttled_rows(engine):
            time.sleep(0.5)
        time.sleep(2)  # the other replicas' tries come at the same moment
        rows = _throttled_rows(engine)
        assert [(row.source, row.details["count"]) for row in rows] == [("127.0.0.1", 2 * FAILURES)]
    finally:
        for client in clients:
            client.close()
        engine.dispose()
