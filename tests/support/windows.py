"""Rate-limit windows are aligned to the clock (`appliance.auth.ratelimit`): a test whose
requests must fall in one window waits for a fresh one when the current one is nearly over."""

from __future__ import annotations

import time


def room_in_window(needed_s: float, *, window_s: float = 60.0) -> None:
    """Return once the current window has `needed_s` seconds left: at once, or just after the
    next one begins. The database's clock is this machine's in the tests."""
    left = window_s - time.time() % window_s
    if left < needed_s:
        time.sleep(left + 0.05)
