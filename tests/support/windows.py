"""Rate-limit windows are aligned to the clock (`appliance.auth.ratelimit`): a test whose
requests must fall in one window waits for a fresh one when the current one is nearly over.
And a database host that has gone silent, for the windows' timeouts."""

from __future__ import annotations

import socket
import threading
import time


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
