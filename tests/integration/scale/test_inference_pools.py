"""Two real llama.cpp servers as one `openai_compat` pool behind three app replicas.

Concurrent chats go round-robin over the replicas. Who served what is counted twice, by
witnesses that do not depend on each other: each server's own access log, and the usage rows
the replicas wrote (which name the node). Then one server is killed (`kill -9`) mid-run.

What the balancer promises, and what is asserted: a request that has not streamed anything yet
moves to the other node (a non-streamed chat in flight on the dead node included), so no chat
fails; the dead node's breaker opens after `failure_threshold` refused connections per replica,
and from then on it is skipped. Each replica admits one request per node at a time
(`max_concurrency = 1`, the one-at-a-time llama-cpp-python server, shared by 3 replicas), so
requests beyond that wait in the replica's queue rather than in the server's.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.llama_server import LlamaServer
from tests.support.replicas import Replicas

pytestmark = pytest.mark.postgresql

SERVED_AS = "smollm2-135m"
MODEL = "pooled-small"
CLIENTS = 6
"""Client threads: two requests in flight per replica, one per node."""


def inference_file(path: Path, nodes: list[LlamaServer]) -> Path:
    listed = ", ".join(f'{{ url = "{n.base_url}", max_concurrency = 1 }}' for n in nodes)
    path.write_text(
        f"""
[[backends]]
name = "llama-pool"
kind = "openai_compat"
tier = "small"
structured_output = "json_object"
connect_timeout_s = 0.5
first_token_timeout_s = 60
total_timeout_s = 120
failure_threshold = 2
reset_after_s = 600
nodes = [{listed}]
models = [{{ name = "{MODEL}", served_as = "{SERVED_AS}", context_length = 2048 }}]
"""
    )
    return path


def chat(client: httpx.Client, n: int, *, stream: bool = False) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Say hello to team {n}."}],
        "max_tokens": 4,
        "stream": stream,
    }
    response = client.post("/v1/chat/completions", json=body)
    return response.status_code, response.text


def run_round(
    clients: list[httpx.Client], count: int, *, after: Callable[[int], None] | None = None
) -> list[tuple[int, str]]:
    """`count` chats from CLIENTS threads, replicas in turn; `after(done)` runs once per
    finished chat (on the thread that finished it)."""
    turn = itertools.cycle(clients)
    lock = threading.Lock()
    done = 0

    def one(n: int) -> tuple[int, str]:
        nonlocal done
        with lock:
            client = next(turn)
        result = chat(client, n)
        with lock:
            done += 1
            finished = done
        if after is not None:
            after(finished)
        return result

    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(one, range(count)))


def usage_by_node(replicas: Replicas) -> Counter[str]:
    engine = create_engine(replicas.env["APPLIANCE_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT node, count(*) FROM usage_records WHERE model = :m GROUP BY node"),
                {"m": MODEL},
            ).all()
    finally:
        engine.dispose()
    return Counter({str(node): int(count) for node, count in rows})


def test_three_replicas_balance_two_llama_servers_and_lose_one_without_a_failed_chat(
    start_replicas: Callable[..., Replicas], models_dir: Path, tmp_path: Path
) -> None:
    gguf = models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf"
    logs = [tmp_path / "node-a.log", tmp_path / "node-b.log"]
    with (
        LlamaServer(gguf, alias=SERVED_AS, interrupt_requests=False, access_log=logs[0]) as a,
        LlamaServer(gguf, alias=SERVED_AS, interrupt_requests=False, access_log=logs[1]) as b,
    ):
        nodes = [a, b]
        for node in nodes:  # the first generation of a fresh server is slow: not in the test
            httpx.post(
                f"{node.base_url}/chat/completions",
                json={"model": SERVED_AS, "messages": [{"role": "user", "content": "Hi"}]}
                | {"max_tokens": 1},
                timeout=120,
            ).raise_for_status()
        warm = [node.requests() for node in nodes]

        replicas = start_replicas(
            3,
            inference_file=str(inference_file(tmp_path / "inference.toml", nodes)),
            app_replicas="3",
            detector_processes="1",
        )
        key = replicas.key("chat")
        clients = replicas.clients(key)
        try:
            # 1. Every chat succeeds, and both servers served a fair share of them.
            first = run_round(clients, 30)
            assert [status for status, _ in first] == [200] * 30, first
            served = [node.requests() - before for node, before in zip(nodes, warm, strict=True)]
            assert sum(served) == 30
            assert min(served) >= 10, f"unfair split between the two servers: {served}"
            # The replicas' own record agrees with what the servers logged.
            assert usage_by_node(replicas) == Counter(
                {a.base_url: served[0], b.base_url: served[1]}
            )

            # 2. Server b dies mid-run: no chat fails, the rest is served by a.
            killed_at: list[int] = []

            def kill_b(done: int) -> None:
                if done == 8 and not killed_at:
                    b.kill()
                    killed_at.append(b.requests())

            second = run_round(clients, 30, after=kill_b)
            assert killed_at, "the kill never happened"
            assert [status for status, _ in second] == [200] * 30, second
            assert b.requests() == killed_at[0]  # nothing reached b after the kill
            rows = usage_by_node(replicas)
            assert rows[b.base_url] == b.requests() - warm[1]
            assert rows[a.base_url] == a.requests() - warm[0]
            assert sum(rows.values()) == 60

            # 3. Every replica's breaker has noticed: streams start at once on a.
            for client in clients:
                status, body = chat(client, 99, stream=True)
                assert status == 200, body
                assert "data: [DONE]" in body
            assert sum(usage_by_node(replicas).values()) == 63
            assert usage_by_node(replicas)[b.base_url] == rows[b.base_url]
        finally:
            for client in clients:
                client.close()
