"""The fixed-window limiter: per bucket, Retry-After until the window resets."""

from __future__ import annotations

from appliance.auth.ratelimit import RateLimiter


def test_limit_per_bucket_and_reset() -> None:
    limiter = RateLimiter(window_s=60)
    assert [limiter.hit("a", 3, now=100.0) for _ in range(3)] == [None, None, None]
    assert limiter.hit("a", 3, now=110.0) == 50
    assert limiter.hit("b", 3, now=110.0) is None
    assert limiter.hit("a", 3, now=160.0) is None
