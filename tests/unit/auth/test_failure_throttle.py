"""Failed authentications per address: refused past the limit, refusals counted once."""

from __future__ import annotations

from appliance.auth.ratelimit import FailureThrottle


def test_an_address_is_refused_past_its_limit_until_the_window_ends() -> None:
    throttle = FailureThrottle(window_s=60)
    for _ in range(3):
        assert throttle.refuse("10.0.0.1", 3, now=0.0) == (0, False)
        throttle.failed("10.0.0.1", now=0.0)

    assert throttle.refuse("10.0.0.1", 3, now=10.0) == (50, True)
    assert throttle.refuse("10.0.0.1", 3, now=11.0) == (49, False)
    assert throttle.refuse("10.0.0.2", 3, now=11.0) == (0, False)  # per address
    assert throttle.take("10.0.0.1", 0.0) == 2
    assert throttle.take("10.0.0.1", 0.0) == 0  # counted once


def test_a_closed_windows_count_survives_a_new_window() -> None:
    throttle = FailureThrottle(window_s=60)
    throttle.failed("a", now=0.0)
    throttle.refuse("a", 1, now=1.0)
    throttle.refuse("a", 1, now=2.0)

    assert throttle.refuse("a", 1, now=61.0) == (0, False)  # a new window began
    assert throttle.take("a", 0.0) == 2
