"""The appliance as its own process: a free loopback port, the CLI, and `serve` until ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.config import PROJECT_ROOT
from tests.support.ports import free_port, wait_ok

__all__ = ["appliance_cli", "free_port", "start_server"]


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
    try:
        wait_ok(
            f"http://127.0.0.1:{port}/readyz",
            timeout=timeout,
            process=process,
            output=lambda: log.read_text()[-2000:],
        )
    except RuntimeError:
        process.kill()
        raise
    return process
