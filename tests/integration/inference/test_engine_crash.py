"""A native crash in the embedded engine costs one request, never the appliance.

The appliance runs as its own process (`appliance serve`) with real worker processes; the tests
send real signals to a worker while it streams, and make one model's worker crash on every start
(a wrapper that kills it with SIGSEGV before it can generate, as a build that does not suit the
CPU does).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from appliance.audit.keys import load_or_create
from appliance.audit.store import EVENTS_TABLE
from appliance.audit.verify import verify
from appliance.config import PROJECT_ROOT
from appliance.db.engine import make_engine
from tests.integration.api.sse import events
from tests.support.process import appliance_cli, free_port, start_server

SMALL, OTHER = "smollm2-135m", "gemma3-270m"
PROMPT = "Write a long story about a cat who sails around the world, in ten chapters."


def worker_pid(server: subprocess.Popen[bytes], model: str, role: str = "interactive") -> int:
    """The pid of the server's worker process for `model` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat_fields[1]) != server.pid or b"appliance.inference.worker" not in argv:
            continue
        args = [a.decode() for a in argv]
        if args[args.index("--name") + 1] == model and args[args.index("--role") + 1] == role:
            return int(entry.name)
    raise AssertionError(f"no worker process for {model} ({role})")


def environment(
    tmp_path: Path, database_url: str, models_dir: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(tmp_path / "data"),
        APPLIANCE_DATABASE_URL=database_url,
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_LLAMA_THREADS="1",
        **extra,
    )
    appliance_cli(env, "db", "upgrade")
    return env


def api_key(env: dict[str, str], *scopes: str) -> dict[str, str]:
    created = appliance_cli(env, "keys", "create", "--name", "t", "--scopes", ",".join(scopes))
    return {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}


def say_hi(client: httpx.Client, model: str) -> httpx.Response:
    """A short non-streamed chat with `model`."""
    return client.post(
        "/api/v1/chat",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
        },
    )


def crash_during_stream(
    client: httpx.Client, server: subprocess.Popen[bytes], sig: signal.Signals
) -> list[tuple[str, dict[str, Any]]]:
    """Stream a long answer and send `sig` to the model's worker after the first delta."""
    received: list[tuple[str, dict[str, Any]]] = []
    body = {
        "model": SMALL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": 300,
    }
    with client.stream("POST", "/api/v1/chat", json=body) as response:
        assert response.status_code == 200
        for name, data in events(response):
            received.append((name, data))
            if name == "delta" and sum(1 for n, _ in received if n == "delta") == 1:
                os.kill(worker_pid(server, SMALL), sig)
    return received


def test_a_worker_crash_mid_stream_costs_that_request_only(
    database_url: str, models_dir: Path, tmp_path: Path
) -> None:
    env = environment(tmp_path, database_url, models_dir)
    headers = api_key(env, "chat")
    port = free_port()
    log = tmp_path / "server.log"
    server = start_server(env, port, log)
    engine = make_engine(database_url)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
        ) as client:
            for sig in (signal.SIGSEGV, signal.SIGKILL):
                before = worker_pid(server, SMALL)
                other: dict[str, httpx.Response] = {}

                def ask_other(
                    client: httpx.Client = client, out: dict[str, httpx.Response] = other
                ) -> None:
                    out["response"] = say_hi(client, OTHER)

                received = crash_during_stream(client, server, sig)
                # Right after the crash: the other model, the probes and the UI still answer.
                helper = threading.Thread(target=ask_other)
                helper.start()
                assert client.get("/healthz").status_code == 200
                assert client.get("/login").status_code == 200
                helper.join(timeout=120)
                assert other["response"].status_code == 200, other["response"].text
                assert other["response"].json()["receipt"]["model"] == OTHER

                name, error = received[-1]
                assert name == "error", received[-3:]
                assert error["code"] == "backend_unavailable"
                assert sig.name in error["message"]
                audit_id = error["receipt"]["audit_id"]

                # The next request on the crashed model is served by a fresh worker.
                again = say_hi(client, SMALL)
                assert again.status_code == 200, again.text
                assert worker_pid(server, SMALL) != before

                with engine.connect() as connection:
                    row = connection.execute(
                        EVENTS_TABLE.select().where(EVENTS_TABLE.c.id == audit_id)
                    ).one()
                assert row.status_code == 503
                assert row.outcome == "backend_unavailable"
        key = load_or_create(tmp_path / "data" / "keys" / "audit_signing.pem").verify_key
        report = verify(engine, key=key)
        assert report.ok, report.summary()
        assert server.poll() is None  # the appliance itself never went down
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    restarts = [line for line in lines if line.get("event") == "engine.worker_restart"]
    assert len(restarts) == 2
    assert "sails around" not in log.read_text()  # no prompt text in the log


def test_a_model_whose_worker_crashes_on_start_is_reported_and_the_rest_serves(
    database_url: str, models_dir: Path, tmp_path: Path
) -> None:
    wrapper = tmp_path / "crash-gemma.sh"
    wrapper.write_text(
        f'#!/bin/sh\ncase "$*" in *"--name {OTHER}"*) kill -SEGV $$ ;; esac\nexec "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = environment(
        tmp_path,
        database_url,
        models_dir,
        APPLIANCE_ENGINE_WORKER_WRAPPER=json.dumps([str(wrapper)]),
    )

    check = subprocess.run(
        [sys.executable, "-m", "appliance", "check"],
        env=env,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert check.returncode == 1
    assert f"[ok] engine {SMALL}: generated a token" in check.stdout
    failed = next(line for line in check.stdout.splitlines() if f"engine {OTHER}" in line)
    assert failed.startswith("[FAIL]")
    assert "SIGSEGV" in failed and "rebuild it portable" in failed

    headers = api_key(env, "chat", "pii")
    port = free_port()
    server = start_server(env, port, tmp_path / "server.log")
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
        ) as client:
            ready = client.get("/readyz").json()
            assert ready["checks"]["models"][SMALL] == "ready"
            assert ready["checks"]["models"][OTHER].startswith("unavailable: crashed with SIGSEGV")
            redacted = client.post("/api/v1/pii/redact", json={"text": "Mail jane.doe@example.com"})
            assert redacted.status_code == 200
            assert "jane.doe@example.com" not in redacted.text
            down = say_hi(client, OTHER)
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "backend_unavailable"
            up = say_hi(client, SMALL)
            assert up.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
