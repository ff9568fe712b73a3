"""A flood of bad API keys is throttled per address and cannot grow the trail without bound:
past `auth_failures_per_minute` failures an address gets 429 with `Retry-After`, and its
refusals are counted in one `auth.throttled` row per window. Issue 17, defect 7."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlmodel import Session, select

from appliance.db.models import AuditEvent
from tests.conftest import RunningAppliance
from tests.support.windows import room_in_window


def _rows(app: RunningAppliance, action: str) -> list[AuditEvent]:
    with Session(app.services.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)))


def test_a_bad_key_flood_is_throttled_and_counted_in_one_row(start_appliance: Any) -> None:
    app: RunningAppliance = start_appliance(auth_failures_per_minute=10)
    throttle = app.server.app.state.identity.auth_throttle
    throttle.window_s = 10.0  # a short window, so the aggregate row is written within the test
    room_in_window(8.0, window_s=throttle.window_s)  # so that the flood falls in one window

    statuses: list[int] = []
    retry_after: set[str] = set()
    with httpx.Client(base_url=app.url, timeout=30) as client:
        for n in range(200):
            response = client.get(
                "/api/v1/tasks", headers={"Authorization": f"Bearer apl_bad{n}_secret{n}"}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.add(response.headers.get("Retry-After", ""))

    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after)
    assert len(_rows(app, "apikey.denied")) == 10

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _rows(app, "auth.throttled"):
        time.sleep(0.2)
    (aggregate,) = _rows(app, "auth.throttled")
    assert aggregate.details["count"] == 190
    assert aggregate.source == "127.0.0.1"
    assert aggregate.status_code == 429

    # A valid key from the same address still waits out the window, then works again.
    time.sleep(max(throttle.window_s - 0.5, 0))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if app.client.get("/api/v1/tasks").status_code == 200:
            break
        time.sleep(0.3)
    assert app.client.get("/api/v1/tasks").status_code == 200
