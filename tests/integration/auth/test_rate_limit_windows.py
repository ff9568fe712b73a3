"""Rate limits counted in a database that has gone silent: the limited request is refused
(503 `rate_limits_unavailable`) once the windows' own timeout passes, and meanwhile the event
loop goes on serving every other request."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine

from appliance.auth.ratelimit import RateWindows, SharedRateLimiter
from tests.conftest import RunningAppliance
from tests.support.windows import SilentServer


# The app's own database does not matter here: the windows are pointed at a silent host.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_silent_windows_database_refuses_the_limited_request_and_not_the_others(
    start_appliance: Callable[..., RunningAppliance],
) -> None:
    running = start_appliance()
    identity = running.server.app.state.identity
    with SilentServer() as silent, ThreadPoolExecutor(1) as pool:
        engine = create_engine(f"postgresql+psycopg://appliance@127.0.0.1:{silent.port}/gone")
        identity.limiter = SharedRateLimiter(RateWindows(engine))
        limited = pool.submit(
            running.client.post, "/api/v1/pii/analyze", json={"text": "hello"}, timeout=120
        )
        assert silent.connected.wait(60)  # the limited request now waits for the database

        health = running.client.get("/healthz", timeout=30)
        assert health.status_code == 200
        assert not limited.done()  # answered while the limited request still waited

        response = limited.result(timeout=120)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limits_unavailable"
    engine.dispose()
