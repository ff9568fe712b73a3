"""Run the real app under uvicorn on a loopback port, in a thread of the test process.

With a key and certificate it serves HTTPS (the browser tests, see tests/e2e/tls.py).
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn
from litestar import Litestar

from tests.support.ports import wait_ok


class LiveServer:
    """The app served on 127.0.0.1 with a free port; `url` is its base address."""

    def __init__(self, app: Litestar, *, tls: tuple[Path, Path] | None = None) -> None:
        self.app = app
        self.trust: ssl.SSLContext | bool = True
        """What HTTP clients pass as `verify`: a context trusting the certificate, under TLS."""
        options: dict[str, str] = {}
        if tls is not None:
            key, cert = tls
            options = {"ssl_keyfile": str(key), "ssl_certfile": str(cert)}
            self.trust = ssl.create_default_context(cafile=str(cert))
        self._scheme = "https" if tls else "http"
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=0,
                log_config=None,
                access_log=False,
                lifespan="on",
                **options,  # type: ignore[arg-type]
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"{self._scheme}://127.0.0.1:{port}"
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        """Poll /readyz until it answers 200; a detector that failed to load ends the wait."""
        wait_ok(
            f"{self.url}/readyz",
            timeout=timeout,
            name="the app",
            give_up=lambda answer: "failed" in str(answer.json()["checks"].get("detector")),
            verify=self.trust,
            interval=0.05,
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
