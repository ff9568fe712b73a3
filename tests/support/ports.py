"""Loopback ports for servers the tests start: a free one, and waiting until one answers.

Kept free of the appliance's own imports: the benchmarks' small backends start with it.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ok(
    url: str,
    *,
    timeout: float,
    process: subprocess.Popen[Any] | None = None,
    name: str = "the server",
    output: Callable[[], str] = lambda: "",
    give_up: Callable[[httpx.Response], bool] = lambda _: False,
    headers: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
    interval: float = 0.1,
) -> None:
    """Poll `url` with GET until it answers 200; raises RuntimeError if it does not in `timeout`
    seconds.

    A refused or timed-out connection is a server still starting. With `process`, its exit ends
    the wait at once, the error naming it with `output()` (the end of its log, say); `give_up`
    ends the wait on an answer that says the server will never be ready. The caller stops
    whatever it started.
    """
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}): {output()}")
        try:
            last = httpx.get(url, timeout=5, headers=headers, verify=verify)
        except httpx.HTTPError:
            pass
        else:
            if last.status_code == 200:
                return
            if give_up(last):
                raise RuntimeError(f"{name} at {url} will not be ready: {last.text[-2000:]}")
        time.sleep(interval)
    answer = f"{last.status_code} {last.text[-2000:]}" if last is not None else "no answer"
    raise RuntimeError(f"{name} at {url} did not answer 200 in {timeout:g} s: {answer}")
