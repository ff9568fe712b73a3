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


class FailureThrottle:
    """Failed authentications per address in fixed windows: after `limit` failures an address
    is refused (without checking what it presents) until its window ends, and those refusals
    are counted so that one audit row per address and window can account for all of them."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        # address -> [window start, failures, refusals past the throttle]
        self._windows: dict[str, list[float]] = {}
        # Refusals of windows that ended before their count was taken: (address, start) -> n.
        self._closed: dict[tuple[str, float], int] = {}

    def _window(self, address: str, now: float) -> list[float]:
        window = self._windows.get(address)
        if window is None or now - window[0] >= self.window_s:
            if window is not None and window[2]:
                self._closed[(address, window[0])] = int(window[2])
            window = [now, 0, 0]
            self._windows[address] = window
            if len(self._windows) > 50_000:
                for key in [k for k, w in self._windows.items() if now - w[0] >= self.window_s]:
                    if self._windows[key][2]:
                        continue  # its count is still to be taken
                    del self._windows[key]
        return window

    def refuse(self, address: str, limit: int, *, now: float | None = None) -> tuple[int, bool]:
        """(seconds until the window ends, first refusal of this window) when `address` is
        past its limit, counting the refusal; (0, False) when it may try."""
        now = time.monotonic() if now is None else now
        with self._lock:
            window = self._window(address, now)
            if window[1] < limit:
                return 0, False
            window[2] += 1
            return max(1, math.ceil(window[0] + self.window_s - now)), window[2] == 1

    def failed(self, address: str, *, now: float | None = None) -> None:
        """Count one failed authentication from `address`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._window(address, now)[1] += 1

    def take(self, address: str, started: float) -> int:
        """The refusals of the window of `address` that began at `started`, once: the count
        an aggregate audit row records when the window is over."""
        with self._lock:
            closed = self._closed.pop((address, started), None)
            if closed is not None:
                return closed
            window = self._windows.get(address)
            if window is None or window[0] != started:
                return 0
            count, window[2] = int(window[2]), 0
            return count

    def window_start(self, address: str) -> float | None:
        """When the current window of `address` began."""
        with self._lock:
            window = self._windows.get(address)
            return window[0] if window is not None else None
