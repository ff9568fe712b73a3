"""A FAKE Ollama server for tests: the Ollama binary cannot be installed here.

`FakeOllamaTransport` is an `httpx.MockTransport` that replays Ollama's documented wire format
(ollama/ollama docs/api.md): `/api/chat` and `/api/generate` stream NDJSON objects with
`done: false` and end with one `done: true` object carrying `done_reason`, `prompt_eval_count`,
`eval_count` and durations in nanoseconds; `stream: false` returns that final object with the
whole text; errors are `{"error": "..."}` with an HTTP status. It records every request body so
tests can assert what the client sent. It generates nothing: replies are scripted by the test.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

CREATED_AT = "2026-11-28T10:00:00.000000Z"


@dataclass
class FakeOllamaTransport:
    """Scripted Ollama answers over `httpx.MockTransport`."""

    reply: list[str] = field(default_factory=lambda: ["Hello", " there", "."])
    done_reason: str = "stop"
    models: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {
                "name": "llama3.2:3b",
                "model": "llama3.2:3b",
                "modified_at": "2026-11-01T12:00:00.000000Z",
                "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            }
        ]
    )
    context_length: int = 131072
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    """path -> (status, message): answer that path with an Ollama error body."""
    stream_error_after: int | None = None
    """Emit an `{"error": ...}` line after this many NDJSON chunks (a mid-stream failure)."""
    raise_on: dict[str, Callable[[httpx.Request], Exception]] = field(default_factory=dict)
    """path -> exception factory: simulate transport failures (timeouts, refused connections)."""
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    library: dict[str, list[int]] = field(
        default_factory=lambda: {"llama3.2:3b": [2019377376, 11338], "qwen2.5:0.5b": [397807936]}
    )
    """What `/api/pull` can fetch: model name -> the byte size of each of its layers."""
    pull_steps: int = 4
    """`downloading` lines per layer (the last one reports the layer complete)."""

    def transport(self) -> httpx.MockTransport:
        """The transport to hand to `ollama.AsyncClient(transport=...)`."""
        return httpx.MockTransport(self.handle)

    # Ollama's final object: counts and durations (ns) of a generation.
    def _final(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": body.get("model"),
            "created_at": CREATED_AT,
            "done": True,
            "done_reason": self.done_reason,
            "total_duration": 1_250_000_000,
            "load_duration": 50_000_000,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 200_000_000,
            "eval_count": len(self.reply),
            "eval_duration": 1_000_000_000,
        }

    def _ndjson(self, lines: list[dict[str, Any]]) -> httpx.Response:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return httpx.Response(
            200, content=content, headers={"content-type": "application/x-ndjson"}
        )

    def pull_lines(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """`/api/pull` progress as docs/api.md documents it: the manifest, `downloading` lines
        per layer (`digest`, `total`, and `completed` once bytes arrived), then verifying,
        writing the manifest, removing unused layers and `success`. An unknown model ends with
        an `{"error": ...}` line, as Ollama reports a missing manifest. A pulled model is then
        listed by `/api/tags`."""
        name = str(body.get("model") or body.get("name") or "")
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        layers = self.library.get(name)
        if layers is None:
            lines.append({"error": "pull model manifest: file does not exist"})
            return lines
        for index, total in enumerate(layers):
            digest = "sha256:" + hashlib.sha256(f"{name}/{index}".encode()).hexdigest()
            lines.append({"status": f"downloading {digest}", "digest": digest, "total": total})
            for step in range(1, self.pull_steps + 1):
                lines.append(
                    {
                        "status": f"downloading {digest}",
                        "digest": digest,
                        "total": total,
                        "completed": total * step // self.pull_steps,
                    }
                )
        lines += [
            {"status": "verifying sha256 digest"},
            {"status": "writing manifest"},
            {"status": "removing any unused layers"},
            {"status": "success"},
        ]
        if all(m["model"] != name for m in self.models):
            self.models.append(
                self.models[0]
                | {"name": name, "model": name, "size": sum(layers), "digest": digest[7:]}
            )
        return lines

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.requests.append((path, body))
        if path in self.raise_on:
            raise self.raise_on[path](request)
        if path in self.errors:
            status, message = self.errors[path]
            return httpx.Response(status, json={"error": message})
        if path == "/api/chat":
            return self._generation(body, key="message")
        if path == "/api/generate":
            return self._generation(body, key="response")
        if path == "/api/tags":
            return httpx.Response(200, json={"models": self.models})
        if path == "/api/show":
            names = {m["model"] for m in self.models}
            if body.get("model") not in names:
                return httpx.Response(404, json={"error": f"model '{body.get('model')}' not found"})
            return httpx.Response(
                200,
                json={
                    "modelfile": '# Modelfile generated by "ollama show"',
                    "parameters": 'stop "<|eot_id|>"',
                    "template": "{{ .Prompt }}",
                    "details": self.models[0]["details"],
                    "model_info": {
                        "general.architecture": "llama",
                        "general.parameter_count": 3212749888,
                        "llama.context_length": self.context_length,
                        "llama.embedding_length": 3072,
                    },
                    "capabilities": ["completion", "tools"],
                    "modified_at": "2026-11-01T12:00:00.000000Z",
                },
            )
        if path == "/api/ps":
            return httpx.Response(
                200,
                json={
                    "models": [
                        self.models[0]
                        | {"expires_at": "2026-11-28T10:05:00.000000Z", "size_vram": 2019393189}
                    ]
                },
            )
        if path == "/api/pull":
            lines = self.pull_lines(body)
            if body.get("stream") is False:
                return httpx.Response(200, json=lines[-1])
            return self._ndjson(lines)
        if path == "/api/embed":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "embeddings": [[0.01 * (i + 1), -0.02, 0.03] for i in range(len(inputs))],
                    "total_duration": 14143917,
                    "load_duration": 1019500,
                    "prompt_eval_count": 8,
                },
            )
        return httpx.Response(404, text="404 page not found")

    def _generation(self, body: dict[str, Any], *, key: str) -> httpx.Response:
        def piece(text: str) -> Any:
            return {"role": "assistant", "content": text} if key == "message" else text

        if body.get("stream") is False:
            return httpx.Response(200, json=self._final(body) | {key: piece("".join(self.reply))})
        lines: list[dict[str, Any]] = []
        for index, text in enumerate(self.reply):
            if self.stream_error_after is not None and index == self.stream_error_after:
                lines.append({"error": "an error was encountered while running the model"})
                return self._ndjson(lines)
            lines.append(
                {
                    "model": body.get("model"),
                    "created_at": CREATED_AT,
                    key: piece(text),
                    "done": False,
                }
            )
        lines.append(self._final(body) | {key: piece("")})
        return self._ndjson(lines)


class FakeOllamaServer:
    """The FAKE Ollama above, served over real HTTP on 127.0.0.1 (for the browser tests, where
    the app's own `ollama` client must reach it through a socket). Each NDJSON line of a
    streamed answer is written and flushed `line_delay_s` apart, so a page can watch progress.
    """

    def __init__(self, fake: FakeOllamaTransport | None = None, *, line_delay_s: float = 0.0):
        self.fake = fake or FakeOllamaTransport()
        self.line_delay_s = line_delay_s
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                content = self.rfile.read(length) if length else b""
                request = httpx.Request(
                    self.command, f"http://fake-ollama{self.path}", content=content
                )
                response = outer.fake.handle(request)
                streamed = response.headers.get("content-type") == "application/x-ndjson"
                self.send_response(response.status_code)
                self.send_header("content-type", response.headers.get("content-type", ""))
                if not streamed:
                    self.send_header("content-length", str(len(response.content)))
                self.end_headers()
                if not streamed:
                    self.wfile.write(response.content)
                    return
                for line in response.content.splitlines(keepends=True):
                    self.wfile.write(line)
                    self.wfile.flush()
                    if outer.line_delay_s:
                        time.sleep(outer.line_delay_s)

            do_GET = do_POST = do_DELETE = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeOllamaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
