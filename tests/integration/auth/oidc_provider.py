"""A real OpenID provider process (`oidc-provider-mock`) on 127.0.0.1, and a forwarding proxy.

The proxy passes every request through unchanged, except that it can present the token request
to the provider under another host name (the provider then signs an ID token whose `iss` is that
name) or as another client (the ID token's `aud` is then that client). Either way the provider
itself issues and signs the bad token with its real key.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

import httpx

_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def provider(
    users: dict[str, dict[str, Any]], *, token_max_age: timedelta = timedelta(hours=1)
) -> Iterator[str]:
    """Run `oidc-provider-mock` as its own process with `users` (sub -> claims); its URL."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "oidc_provider_mock",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--require-nonce",
        f"--token-max-age={int(token_max_age.total_seconds())}",
    ]
    for sub, claims in users.items():
        command.append(f"--user-claims={json.dumps({'sub': sub, **claims})}")
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the OpenID provider exited"
            try:
                if httpx.get(f"{url}/.well-known/openid-configuration", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the OpenID provider did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class ProxyServer(ThreadingHTTPServer):
    """Forwards to `upstream`; `token_host` / `token_client` alter only the token request."""

    daemon_threads = True
    upstream = ""
    token_host: str | None = None
    token_client: tuple[str, str] | None = None  # (client id we send, client id to present)


class _Forward(BaseHTTPRequestHandler):
    server: ProxyServer

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if self.path.startswith("/oauth2/token"):
            if self.server.token_host:
                headers["Host"] = self.server.token_host
            if self.server.token_client:
                ours, theirs = self.server.token_client
                auth = headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                    assert unquote(user) == ours
                    pair = f"{quote(theirs)}:{secret}".encode()
                    headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
                body = body.replace(f"client_id={ours}".encode(), f"client_id={theirs}".encode())
        with httpx.Client(timeout=30, trust_env=False) as client:
            answer = client.request(
                self.command, self.server.upstream + self.path, headers=headers, content=body
            )
        self.send_response(answer.status_code)
        for name, value in answer.headers.multi_items():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = _forward
    do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def proxy(upstream: str) -> Iterator[ProxyServer]:
    """A proxy to `upstream` on a free loopback port; its URL is `http://127.0.0.1:<port>`."""
    server = ProxyServer(("127.0.0.1", 0), _Forward)
    server.upstream = upstream
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
