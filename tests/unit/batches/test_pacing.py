"""Interactive traffic first: the activity signal, the item-start wait, the step pause."""

from __future__ import annotations

import threading
import time

import anyio

from appliance.batches.pacing import InteractiveTraffic
from appliance.inference.gate import InteractiveActivity


def test_waits_while_a_request_is_in_flight_then_for_the_quiet_window() -> None:
    activity = InteractiveActivity()
    activity.begin()

    async def scenario() -> float:
        async def finish_later() -> None:
            await anyio.sleep(0.2)
            activity.end()

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(finish_later)
            await InteractiveTraffic(activity).wait_quiet(0.3)
        return time.monotonic() - started

    waited = anyio.run(scenario)
    assert waited >= 0.5  # 0.2 s in flight, then 0.3 s of quiet
    assert activity.quiet_for() >= 0.3


def test_no_wait_when_quiet_or_turned_off() -> None:
    activity = InteractiveActivity()
    traffic = InteractiveTraffic(activity)
    assert anyio.run(traffic.wait_quiet, 0.3) < 0.2  # nothing ever ran: quiet since start-up
    activity.begin()
    assert anyio.run(traffic.wait_quiet, 0.0) == 0.0  # turned off: no wait even while busy


def test_item_start_wait_is_bounded() -> None:
    activity = InteractiveActivity(max_defer_s=0.2)
    activity.begin()  # never ends
    waited = anyio.run(InteractiveTraffic(activity).wait_quiet, 5.0)
    assert 0.2 <= waited < 5.0


def test_background_step_pauses_until_interactive_traffic_is_quiet() -> None:
    activity = InteractiveActivity()
    assert activity.yield_to_interactive(0.1) == 0.0  # quiet: a step runs at once
    activity.begin()
    paused: list[float] = []
    worker = threading.Thread(target=lambda: paused.append(activity.yield_to_interactive(0.1)))
    worker.start()
    worker.join(timeout=0.3)
    assert worker.is_alive(), "the step ran while an interactive request was in flight"
    activity.end()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert paused[0] >= 0.3


def test_step_pause_is_bounded_so_a_busy_box_still_progresses() -> None:
    activity = InteractiveActivity(max_defer_s=0.2)
    activity.begin()
    paused = activity.yield_to_interactive(0.1, poll_s=0.01)
    assert 0.2 <= paused < 2.0


def test_counts_only_interactive_posts() -> None:
    activity = InteractiveActivity()
    seen: list[int] = []

    async def app(scope: object, receive: object, send: object) -> None:
        seen.append(activity.in_flight)

    counted = InteractiveTraffic(activity).middleware(app)  # type: ignore[arg-type]

    async def call(method: str, path: str) -> None:
        scope = {"type": "http", "method": method, "path": path}
        await counted(scope, None, None)  # type: ignore[arg-type]

    async def scenario() -> None:
        await call("POST", "/api/v1/chat")
        await call("POST", "/v1/chat/completions")
        await call("POST", "/api/v1/batches")
        await call("GET", "/api/v1/batches/abc")

    anyio.run(scenario)
    assert seen == [1, 1, 0, 0]
    assert activity.in_flight == 0
    assert activity.quiet_for() < 5
