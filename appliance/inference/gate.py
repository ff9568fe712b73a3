"""Admission control: one generation per loaded model at a time, with a bounded wait queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from appliance.errors import BackendBusy


class GenerationGate:
    """Lets one caller generate while at most `queue_size` others wait; the next is refused."""

    def __init__(self, *, name: str, queue_size: int, retry_after: int) -> None:
        self.name = name
        self.queue_size = queue_size
        self.retry_after = retry_after
        self._slot = asyncio.Semaphore(1)
        self.waiting = 0

    @property
    def busy(self) -> bool:
        """Whether a generation holds the model now."""
        return self._slot.locked()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold the model for the duration of the block, waiting in line if it is busy."""
        if self._slot.locked() and self.waiting >= self.queue_size:
            raise BackendBusy(
                f"model '{self.name}' is busy and {self.waiting} requests are waiting; "
                f"retry in {self.retry_after} s",
                retry_after=self.retry_after,
            )
        self.waiting += 1
        try:
            await self._slot.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slot.release()
