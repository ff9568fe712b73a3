"""Rate-limit windows are aligned to the clock (`appliance.auth.ratelimit`): a test whose
requests must fall in one window waits for a fresh one when the current one is nearly over.
And a database host that has gone silent, for the windows' timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from sqlalchemy import Engine, create_engine


def room_in_window(needed_s: float, *, window_s: float = 60.0) -> None:
    """Return once the current window has `needed_s` seconds left: at once, or just after the
    next one begins. The database's clock is this machine's in the tests."""
    left = window_s - time.time() % window_s
    if left < needed_s:
        time.sleep(left + 0.05)


class SilentServer:
    """A TCP port that accepts connections and never answers: a database host gone silent
    (blackholed, or hung), where a client waits for its own timeout, not for a refusal."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.connected = threading.Event()
        """Set once a client connected: it is now waiting for an answer."""
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            self._held.append(connection)
            self.connected.set()

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()
        self._thread.join(5)


def silent_engine(silent: SilentServer, *, connect_timeout: int = 2) -> Engine:
    """An engine on `silent`: its first statement connects, then waits `connect_timeout`
    seconds for an answer and fails (so a test whose loop it blocks fails rather than hangs)."""
    return create_engine(
        f"postgresql+psycopg://appliance@127.0.0.1:{silent.port}/gone",
        connect_args={"connect_timeout": connect_timeout},
    )


async def assert_waits_off_the_loop(silent: SilentServer, waiting: asyncio.Task[object]) -> None:
    """`waiting` (a task whose read reaches `silent`) waits for its answer while the event loop
    runs on: had the read blocked the loop, the task would be done (failed) by now."""
    # This wait is answered through the loop...
    assert await asyncio.to_thread(silent.connected.wait, 60)
    await asyncio.sleep(0.05)
    assert not waiting.done()  # ...and the task still waits
