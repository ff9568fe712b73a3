"""The runner's wait for quiet interactive traffic."""

from __future__ import annotations

import time

import anyio

from appliance.batches.pacing import InteractiveActivity


def test_waits_while_a_request_is_in_flight_then_for_the_quiet_window() -> None:
    activity = InteractiveActivity()
    activity.in_flight = 1

    async def scenario() -> float:
        async def finish_later() -> None:
            await anyio.sleep(0.2)
            activity.in_flight = 0
            activity.last_end = time.monotonic()

        started = time.monotonic()
        async with anyio.create_task_group() as group:
            group.start_soon(finish_later)
            await activity.wait_quiet(0.3)
        return time.monotonic() - started

    waited = anyio.run(scenario)
    assert waited >= 0.5  # 0.2 s in flight, then 0.3 s of quiet
    assert activity.quiet_for() >= 0.3


def test_no_wait_when_quiet_or_turned_off() -> None:
    activity = InteractiveActivity()
    started = time.monotonic()
    anyio.run(activity.wait_quiet, 0.3)  # nothing ever ran: quiet since start-up
    anyio.run(activity.wait_quiet, 0.0)
    assert time.monotonic() - started < 0.2
