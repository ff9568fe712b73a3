"""The scale benchmark's load: the body wrk sends, nginx in front of a backend, and wrk's
summary (Debian's nginx and wrk, skipped where they are not installed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.bench.peer import LONG, PLANTED
from tests.bench.scale import (
    FILE_NUMBER,
    NGINX,
    WRK,
    body,
    instant_backend,
    nginx,
    run_wrk,
    wrk_script,
)

needs_wrk = pytest.mark.skipif(not Path(WRK).exists(), reason="Debian's wrk is not installed")
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="Debian's nginx is not installed")


def host_port(url: str) -> str:
    return url.removeprefix("http://").removesuffix("/v1")


def lua_string(script: str, name: str) -> str:
    start = script.index(f"local {name} = [==[") + len(f"local {name} = [==[")
    return script[start : script.index("]==]", start)]


@pytest.mark.parametrize("number", [1, 2_000_001, 9_999_999])
def test_wrk_body_is_the_json_body_with_the_counter(tmp_path: Path, number: int) -> None:
    script = wrk_script(tmp_path / "s.lua", model="m", key="k", start=0).read_text()
    sent = lua_string(script, "head") + str(number) + lua_string(script, "tail")
    assert json.loads(sent) == body("m", number)
    prompt = json.loads(sent)["messages"][0]["content"]
    assert FILE_NUMBER not in prompt and f"file {number}." in prompt
    assert len(prompt) >= len(LONG) - len(FILE_NUMBER)
    assert all(value in prompt for value in PLANTED[LONG])


@needs_nginx
@needs_wrk
def test_wrk_through_nginx_counts_requests_and_its_own_cpu(tmp_path: Path) -> None:
    with (
        instant_backend() as (url, _),
        nginx(tmp_path / "nginx", [host_port(url)] * 2) as (front, _),
    ):
        script = wrk_script(tmp_path / "s.lua", model="m", key="k", start=0)
        load = run_wrk(front, script, seconds=1, connections=2)
    assert load.requests > 0
    assert load.failed == 0
    assert 0 < load.p50 <= load.p95 <= load.p99
    assert 0.5 < load.seconds < 3
    assert load.cpu >= 0


class _Refusing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(429)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@needs_wrk
def test_wrk_counts_every_refusal_as_failed(tmp_path: Path, refusing: str) -> None:
    script = wrk_script(tmp_path / "s.lua", model="m", key="k", start=0)
    load = run_wrk(refusing, script, seconds=1, connections=1)
    assert load.requests > 0
    assert load.errors["status"] == load.requests == load.failed
