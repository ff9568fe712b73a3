"""Crash safety: `kill -9` the server during concurrent requests, again and again.

After every kill, each request that got a 2xx answer must have its audit row (found by the
receipt's audit id and the `X-Request-Id` it was sent with), and the chain, its signed
checkpoints and the witness file must verify. The next start must continue the same chain.

Rounds: `APPLIANCE_TEST_CRASH_ROUNDS` (default 2 per database in the suite; `make test-crash`
runs more).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from appliance.audit.keys import load_or_create
from appliance.audit.store import EVENTS_TABLE
from appliance.audit.verify import verify
from appliance.audit.witness import read_checkpoints
from appliance.db.engine import make_engine
from tests.support.process import appliance_cli, free_port, start_server

ROUNDS = int(os.environ.get("APPLIANCE_TEST_CRASH_ROUNDS", "2"))
WRITERS = 4
PROMPT = "Write one line to Jane Doe at jane.doe@example.com."


def _hammer(
    url: str, headers: dict[str, str], stop: threading.Event, answered: list[tuple[str, str]]
) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            request_id = uuid.uuid4().hex
            try:
                response = client.post(
                    "/api/v1/chat",
                    json={"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2},
                    headers={"X-Request-Id": request_id},
                )
            except httpx.HTTPError:
                continue  # the server died mid-request: no answer, no promise
            if 200 <= response.status_code < 300:
                answered.append((request_id, response.json()["receipt"]["audit_id"]))


def test_every_answered_request_survives_kill_9_and_the_chain_verifies(
    database_url: str, models_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    witness = tmp_path / "witness.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(data),
        APPLIANCE_DATABASE_URL=database_url,
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_AUDIT_WITNESS=str(witness),
        APPLIANCE_AUDIT_CHECKPOINT_EVERY="3",
        APPLIANCE_LLAMA_THREADS="1",
    )
    appliance_cli(env, "db", "upgrade")
    key_text = appliance_cli(env, "keys", "create", "--name", "crash", "--scopes", "chat").stdout
    headers = {"Authorization": f"Bearer {key_text.strip().splitlines()[-1]}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engine = make_engine(database_url)
    rng = random.Random(5)
    answered: list[tuple[str, str]] = []
    try:
        for round_ in range(ROUNDS):
            server = start_server(env, port, tmp_path / "server.log")
            stop = threading.Event()
            before = len(answered)
            writers = [
                threading.Thread(target=_hammer, args=(url, headers, stop, answered))
                for _ in range(WRITERS)
            ]
            for writer in writers:
                writer.start()
            deadline = time.monotonic() + 30
            # Kill at a random moment once this round has some answers to lose.
            while len(answered) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            stop.set()
            for writer in writers:
                writer.join(timeout=60)
            assert len(answered) > before, f"round {round_}: no request was answered"

            with engine.connect() as connection:
                stored = {
                    (row.request_id, row.id)
                    for row in connection.execute(
                        select(EVENTS_TABLE.c.request_id, EVENTS_TABLE.c.id)
                    )
                }
            missing = [pair for pair in answered if pair not in stored]
            assert missing == [], f"round {round_}: answered but not audited: {missing}"
            key = load_or_create(data / "keys" / "audit_signing.pem").verify_key
            report = verify(engine, key=key, witnessed=read_checkpoints(witness))
            assert report.ok, f"round {round_}: {report.summary()}"
            assert report.checkpoints >= 1
    finally:
        engine.dispose()
