"""The real server process: no outbound network, metadata-only logs, pages and assets served."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from appliance.auth.accounts import verify_password
from appliance.config import PROJECT_ROOT

GUARD = PROJECT_ROOT / "tests" / "support" / "no_egress"
SECRET_NAME, SECRET_EMAIL = "Margaret Thornbury", "m.thornbury@example.co.uk"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _guarded_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        PYTHONPATH=f"{GUARD}{os.pathsep}{PROJECT_ROOT}",
        NO_EGRESS_LOG=str(tmp_path / "egress.log"),
        HOME=str(tmp_path / "home"),  # no cached suffix list or model from earlier runs
        APPLIANCE_DATA_DIR=str(tmp_path / "data"),
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_MAX_TOKENS="16",
    )
    return env


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[str]
    egress_log: Path
    stderr_path: Path
    headers: dict[str, str]
    """`Authorization: Bearer` with a key made by `appliance keys create`."""


@pytest.fixture
def guarded_server(tmp_path: Path, models_dir: Path) -> Iterator[ServerProcess]:
    """`appliance serve` in its own process, every non-loopback connection refused and logged."""
    env = _guarded_env(tmp_path, models_dir)
    subprocess.run(
        [sys.executable, "-m", "appliance", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
    )
    made = subprocess.run(
        [sys.executable, "-m", "appliance", "keys", "create", "--name", "test", "--scopes", "chat"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    port = _free_port()
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, stderr_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.1)
        yield ServerProcess(url, process, tmp_path / "egress.log", stderr_path, headers)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_serves_with_outbound_connections_refused(guarded_server: ServerProcess) -> None:
    response = httpx.post(
        f"{guarded_server.url}/api/v1/chat",
        headers=guarded_server.headers,
        json={
            "messages": [
                {
                    "role": "user",
                    "content": f"Please greet {SECRET_NAME} and write to {SECRET_EMAIL}.",
                }
            ]
        },
        timeout=120,
    )

    assert response.status_code == 200, response.text
    assert {"PERSON", "EMAIL_ADDRESS"} <= set(response.json()["receipt"]["entities"])
    attempts = guarded_server.egress_log.read_text() if guarded_server.egress_log.exists() else ""
    assert attempts == ""


def test_the_egress_guard_catches_a_suffix_list_download(tmp_path: Path, models_dir: Path) -> None:
    # Control for the test above: without the appliance's setting, tldextract reaches out.
    env = _guarded_env(tmp_path, models_dir)
    env.pop("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", None)
    subprocess.run(
        [sys.executable, "-c", "import tldextract; tldextract.extract('a.example.co.uk')"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert "publicsuffix" in (tmp_path / "egress.log").read_text()


def test_logs_are_json_and_hold_no_request_or_answer_text(guarded_server: ServerProcess) -> None:
    response = httpx.post(
        f"{guarded_server.url}/api/v1/chat",
        headers=guarded_server.headers,
        json={
            "messages": [
                {
                    "role": "user",
                    "content": f"Please greet {SECRET_NAME} and write to {SECRET_EMAIL}.",
                }
            ]
        },
        timeout=120,
    )
    answer = response.json()["message"]["content"]
    httpx.post(
        f"{guarded_server.url}/api/v1/chat",
        headers=guarded_server.headers,
        json={"messages": [{"role": "robot", "content": SECRET_EMAIL}]},
        timeout=30,
    )
    guarded_server.process.terminate()
    guarded_server.process.wait(timeout=30)

    lines = [ln for ln in guarded_server.stderr_path.read_text().splitlines() if ln.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r.get("path") == "/api/v1/chat" and r.get("status") == 200 for r in records)
    logged = "\n".join(lines)
    for secret in (SECRET_NAME, SECRET_EMAIL, "Thornbury", answer.strip()[:40]):
        assert secret not in logged


def test_first_run_hands_the_admin_password_over_in_a_private_file(
    guarded_server: ServerProcess, tmp_path: Path
) -> None:
    guarded_server.process.terminate()
    out, _ = guarded_server.process.communicate(timeout=30)
    secret = tmp_path / "data" / "first-admin-password"
    assert f"password in {secret}" in out
    # Not a terminal (systemd sends stdout to the journal): the password itself is not printed.
    password = secret.read_text().strip()
    assert len(password) >= 20 and password not in out
    assert secret.stat().st_mode & 0o777 == 0o600
    with closing(sqlite3.connect(tmp_path / "data" / "appliance.db")) as db:
        (stored,) = db.execute(
            "SELECT password_hash FROM users WHERE username = 'admin'"
        ).fetchone()
    assert verify_password(stored, password)


def test_pages_and_assets_are_served_from_the_box(guarded_server: ServerProcess) -> None:
    # Pages need a signed-in browser; the sign-in page is public and shares base.html.
    home = httpx.get(f"{guarded_server.url}/", headers={"Accept": "text/html"}, timeout=10)
    assert home.status_code == 303 and home.headers["location"] == "/login"
    page = httpx.get(f"{guarded_server.url}/login", timeout=10)
    assert page.status_code == 200
    assert '<script src="/static/vendor/htmx.min.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"

    htmx = httpx.get(f"{guarded_server.url}/static/vendor/htmx.min.js", timeout=10)
    assert htmx.status_code == 200, "run `make install` to build the static assets"
    assert "htmx" in htmx.text[:2000]

    status = httpx.get(f"{guarded_server.url}/ui/status", timeout=10)
    assert status.status_code == 401

    schema = httpx.get(f"{guarded_server.url}/schema/openapi.json", timeout=10).json()
    assert "/api/v1/chat" in schema["paths"]
