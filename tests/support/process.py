"""The appliance as its own process: a free loopback port, the CLI, and `serve` until ready."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from appliance.config import PROJECT_ROOT


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def appliance_cli(
    env: dict[str, str], *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m appliance ARGS` with `env`; raises if it fails."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=timeout,
    )


def start_server(
    env: dict[str, str], port: int, log: Path, *, timeout: float = 120
) -> subprocess.Popen[bytes]:
    """Start `appliance serve` on `port` (stderr appended to `log`) and wait until /readyz."""
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=PROJECT_ROOT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server never became ready")
