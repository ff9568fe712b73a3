"""SQLite means one server process: a second one on the same file does not start, however it
was launched (the app checks at start-up, not only `appliance serve`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from litestar.testing import TestClient

from appliance.app import create_app
from appliance.config import Settings
from appliance.db.engine import hold_single_server, release_single_server, upgrade
from appliance.errors import ServerAlreadyRunning

HOLD = """
import sys, time
from appliance.db.engine import hold_single_server, upgrade
assert hold_single_server(sys.argv[1]) is None
print("held", flush=True)
time.sleep(600)
"""


def test_an_app_on_a_sqlite_file_another_process_serves_does_not_start(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    url = settings.resolved_database_url
    upgrade(url)
    other = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        database = Path(url.split("///", 1)[1]).resolve()
        refused = hold_single_server(url)
        assert refused is not None and str(database) in refused
        # The lifespan's error reaches the test client inside an exception group.
        with pytest.raises(ExceptionGroup) as failed:  # noqa: SIM117
            with TestClient(app=create_app(settings, backends=[])):
                pass
        assert failed.group_contains(ServerAlreadyRunning, match="SQLite means one server process")
    finally:
        other.kill()
        other.wait(timeout=30)
    # The other process gone, its lock went with it; asking twice in one process is a no-op.
    with TestClient(app=create_app(settings, backends=[])) as client:
        assert client.get("/healthz").status_code == 200
        assert hold_single_server(url) is None  # shared with the app in this process
        release_single_server(url)
        # While this app serves, another process cannot.
        held = subprocess.run(
            [sys.executable, "-c", HOLD, url], capture_output=True, text=True, timeout=120
        )
        assert held.returncode != 0 and "held" not in held.stdout
    # Stopped, the app gave the lock back: another process may serve now.
    again = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert again.stdout is not None and again.stdout.readline().strip() == "held"
    finally:
        again.kill()
        again.wait(timeout=30)


def test_holders_in_one_process_share_the_lock_until_the_last_lets_go(tmp_path: Path) -> None:
    """`appliance serve` holds the lock, then its app: the app stopping leaves serve's hold."""
    url = f"sqlite:///{tmp_path / 'appliance.db'}"

    def another_process_can_hold() -> bool:
        other = subprocess.run(
            [sys.executable, "-c", HOLD.replace("time.sleep(600)", ""), url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return other.returncode == 0 and "held" in other.stdout

    assert hold_single_server(url) is None
    assert hold_single_server(url) is None
    release_single_server(url)
    assert not another_process_can_hold()
    release_single_server(url)
    assert another_process_can_hold()
