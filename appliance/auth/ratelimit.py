"""Fixed-window rate limits per key, user and address, kept in process memory.

Each replica counts on its own, so behind a balancer of N replicas the effective limit is up to N
times the setting; the account lockout (in the database) is what holds across replicas.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """Counts hits per bucket in windows of `window_s`; refuses the hit after `limit`."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._window = window_s
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def hit(self, bucket: str, limit: int, *, now: float | None = None) -> int | None:
        """Count one hit; None if allowed, else the seconds until the window resets."""
        now = time.monotonic() if now is None else now
        with self._lock:
            start, count = self._counts.get(bucket, (now, 0))
            if now - start >= self._window:
                start, count = now, 0
            if count >= limit:
                return max(1, math.ceil(start + self._window - now))
            self._counts[bucket] = (start, count + 1)
            if len(self._counts) > 50_000:
                self._prune(now)
            return None

    def _prune(self, now: float) -> None:
        # Bounded memory under a flood of distinct addresses: drop finished windows.
        for key in [k for k, (s, _) in self._counts.items() if now - s >= self._window]:
            del self._counts[key]
