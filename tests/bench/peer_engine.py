"""llama-cpp-python's OpenAI-compatible server, timed from inside, for `make bench-peer`.

The same app `python -m llama_cpp.server` builds (`create_app` with the same settings), served by
uvicorn the same way, with one pure ASGI wrapper: for each `POST .../chat/completions` it appends
one JSON line to the file named on the command line: seconds from the request reaching the app
to its first content token and to its last byte, the number of content chunks it sent, and how
many of the benchmark's planted identifiers (a JSON list in `PEER_CANARIES`) its messages held.
No text is recorded.

Every arm of the peer benchmark goes through one such server, so the benchmark can subtract the
engine's own time from each request's latency: an anonymized prompt is a different prompt (a
different length, another prefix for the server's prompt cache), and without the subtraction that
difference in model work would be counted as the proxy's overhead.

    python -m tests.bench.peer_engine MODEL ALIAS PORT TIMINGS_FILE THREADS
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ModelSettings, ServerSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _content_chunks(body: bytes) -> int:
    """Server-sent events in `body` whose delta carries text (non-streamed: the one message)."""
    count = 0
    for line in body.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            choices = json.loads(line[6:]).get("choices") or []
        except ValueError:
            continue
        if any((c.get("delta") or {}).get("content") for c in choices):
            count += 1
    return count


def _planted(body: bytes, canaries: list[str]) -> int:
    """How many of `canaries` occur in the request's message texts."""
    try:
        messages = json.loads(body).get("messages") or []
    except ValueError:
        return 0
    text = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
    return sum(canary in text for canary in canaries)


def timed(app: App, path: str, canaries: list[str]) -> App:
    """`app` with each chat completion's inside time appended to `path`."""
    # Opened once: a line is written and flushed after the response's last byte has gone out.
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the server's life

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        first: float | None = None
        chunks = 0
        streamed = False
        body = bytearray()

        async def listen() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def watch(message: Message) -> None:
            nonlocal first, chunks, streamed
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                streamed = b"text/event-stream" in headers.get(b"content-type", b"")
            elif message["type"] == "http.response.body" and streamed:
                found = _content_chunks(message.get("body", b""))
                if found and first is None:
                    first = time.perf_counter() - started
                chunks += found
            await send(message)

        await app(scope, listen, watch)
        total = time.perf_counter() - started
        record = {
            "total": total,
            "first": first if first else total,
            "chunks": chunks,
            "planted": _planted(bytes(body), canaries),
        }
        out.write(json.dumps(record) + "\n")
        out.flush()

    return wrapper


def main() -> None:
    model, alias, port, path, threads = sys.argv[1:6]
    app = create_app(
        server_settings=ServerSettings(host="127.0.0.1", port=int(port)),
        model_settings=[
            ModelSettings(
                model=model,
                model_alias=alias,
                n_ctx=2048,
                n_threads=int(threads),
                verbose=False,
                # Each arm sends its own version of a prompt (raw, or anonymized its own way);
                # the RAM cache keeps each one's evaluated state, so no arm pays for the others'.
                cache=True,
                cache_type="ram",
                cache_size=2 << 30,
            )
        ],
    )
    canaries = json.loads(os.environ.get("PEER_CANARIES", "[]"))
    uvicorn.run(timed(app, path, canaries), host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main()
