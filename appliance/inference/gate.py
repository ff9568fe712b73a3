"""Admission control: one generation per loaded model at a time, interactive work first.

Two kinds of work share the box's cores: interactive requests (a person or a tool waiting for the
answer) and background work (batch items). Background work is marked with `background()` (a
context variable, so it follows the work into the backend and its worker threads). Then:

- at a `GenerationGate`, a waiting interactive caller always goes before a waiting background one;
- `InteractiveActivity` knows whether interactive requests are in flight (or ended moments ago),
  and a background generation calls `yield_to_interactive()` between its steps: it pauses there
  until interactive traffic is quiet, so an arriving request waits at most one short step
  instead of a whole batch item. A pause lasts at most `max_defer_s`, then one step runs anyway,
  so a box that is never quiet still makes (slow) progress on its batches.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

from appliance.errors import BackendBusy
from appliance.metrics import queue_rejected, queue_waited

MAX_DEFER_S = 10.0
"""Longest a background step or item waits for quiet before it runs anyway."""

_background: ContextVar[bool] = ContextVar("appliance_background_work", default=False)


@contextmanager
def background() -> Iterator[None]:
    """Mark the work done inside the block (and the tasks and threads it starts) as background."""
    token = _background.set(True)
    try:
        yield
    finally:
        _background.reset(token)


def is_background() -> bool:
    """Whether the current work was marked with `background()`."""
    return _background.get()


class InteractiveActivity:
    """Interactive requests in flight, and when the last one ended.

    Updated on the event loop (`begin`/`end`), read from worker threads too: the fields are
    plain numbers written under a lock, so a reader sees a consistent pair.
    """

    def __init__(self, *, max_defer_s: float = MAX_DEFER_S) -> None:
        self.max_defer_s = max_defer_s
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_end = 0.0

    def begin(self) -> None:
        """An interactive request started."""
        with self._lock:
            self.in_flight += 1

    def end(self) -> None:
        """An interactive request finished (answered, refused or abandoned)."""
        with self._lock:
            self.in_flight = max(self.in_flight - 1, 0)
            self.last_end = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since interactive traffic stopped (0 while a request is in flight)."""
        with self._lock:
            if self.in_flight:
                return 0.0
            return time.monotonic() - self.last_end

    def busy(self, quiet_s: float) -> bool:
        """Whether background work should hold back now (a request in flight or `quiet_s` ago)."""
        return quiet_s > 0 and self.quiet_for() < quiet_s

    async def wait_quiet(self, quiet_s: float) -> float:
        """Return once nothing interactive ran for `quiet_s` (or after `max_defer_s` anyway);
        returns the seconds waited."""
        started = time.monotonic()
        deadline = started + self.max_defer_s
        while (quiet := self.quiet_for()) < quiet_s and time.monotonic() < deadline:  # noqa: ASYNC110 - a time window, not an event
            await asyncio.sleep(max(0.01, min(quiet_s - quiet, 0.05)))
        return time.monotonic() - started

    def yield_to_interactive(self, quiet_s: float, *, poll_s: float = 0.01) -> float:
        """On a worker thread between two steps of background work: block while interactive
        traffic is busy (at most `max_defer_s`); returns the seconds paused."""
        if not self.busy(quiet_s):
            return 0.0
        started = time.monotonic()
        deadline = started + self.max_defer_s
        while self.busy(quiet_s) and time.monotonic() < deadline:
            time.sleep(poll_s)
        return time.monotonic() - started


INTERACTIVE = InteractiveActivity()
"""The process's interactive traffic: one per process, because its apps share the same cores."""


class GenerationGate:
    """Lets one caller generate while at most `queue_size` others wait; the next is refused.

    Waiters are served interactive first, then background, each kind in arrival order.
    """

    def __init__(self, *, name: str, queue_size: int, retry_after: int) -> None:
        self.name = name
        self.queue_size = queue_size
        self.retry_after = retry_after
        self._held = False
        self._interactive: list[asyncio.Future[None]] = []
        self._background: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now."""
        return self._held

    @property
    def waiting(self) -> int:
        """Callers waiting for the model."""
        return len(self._interactive) + len(self._background)

    def _hand_over(self) -> None:
        """Give the free slot to the next waiter: interactive before background."""
        for queue in (self._interactive, self._background):
            while queue:
                future = queue.pop(0)
                if not future.done():
                    future.set_result(None)
                    self._held = True
                    return
        self._held = False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the model for the duration of the block, waiting in line if it is busy."""
        started = time.monotonic()
        if self._held and self.waiting >= self.queue_size:
            queue_rejected(self.name)
            raise BackendBusy(
                f"model '{self.name}' is busy and {self.waiting} requests are waiting; "
                f"retry in {self.retry_after} s",
                retry_after=self.retry_after,
            )
        if not self._held and not self.waiting:
            self._held = True
        else:
            queue = self._background if is_background() else self._interactive
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue.append(future)
            try:
                await future
            except BaseException:
                if future in queue:
                    queue.remove(future)
                elif future.done() and not future.cancelled():
                    # Handed the slot just as we were cancelled: pass it on.
                    self._hand_over()
                raise
        queue_waited(self.name, background=is_background(), seconds=time.monotonic() - started)
        try:
            yield
        finally:
            self._hand_over()
