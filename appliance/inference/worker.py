"""An engine worker: one llama.cpp model instance in a process of its own.

Started by the web process (`appliance.inference.supervisor`) as
`python -m appliance.inference.worker --name ... --path ... --role ...`. It talks over its
stdin and stdout only (never a socket, so nothing outside the box can reach it), one JSON object
per line:

- The worker loads the model, generates one token, then says `{"ready": true, ...}` (or
  `{"fatal": "..."}` and exits 3). A native crash kills this process only.
- Requests: `{"op": "chat" | "score" | "embed", "id": N, ...}`, answered by `{"id": N, "t":
  "..."}` per token (chat), then `{"id": N, "done": {...}}`, `{"id": N, "result": ...}` or
  `{"id": N, "error": {...}}`. A chat with `"stream": false` sends no token lines: its `done`
  holds the whole `content`. `{"op": "cancel", "id": N}` stops a generation.
- Paced work (batch items) says `{"id": N, "step": true}` after each step and waits for
  `{"op": "go", "id": N}`: the web process holds it back while interactive requests run.

Errors carry the error tree's code and message, never prompt text; anything written to the
process's stdout by native code goes to stderr, which the web process logs line by line.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from appliance.errors import ApplianceError
from appliance.inference.base import Message
from appliance.inference.engine import ROLES, LlamaInstance, LocalModel, system_info

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (no orphaned model in memory)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: closed stdin still ends the worker
        pass


class _Channel:
    """The protocol stream: a private duplicate of stdout, one JSON object per line."""

    def __init__(self) -> None:
        self._out: IO[str] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        # Whatever else writes to fd 1 (native code, a stray print) lands in stderr instead.
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")


def _error(exc: BaseException) -> dict[str, Any]:
    """An error as the web process rebuilds it; third-party messages are not passed on."""
    if isinstance(exc, ApplianceError):
        return {"code": exc.code, "message": exc.message, "field": exc.field}
    return {"code": "inference_failed", "message": f"generation failed ({type(exc).__name__})"}


class Worker:
    """Serves one instance, one request at a time, in arrival order."""

    def __init__(self, instance: LlamaInstance, channel: _Channel, *, timeout_s: float) -> None:
        self.instance = instance
        self.channel = channel
        self.timeout_s = timeout_s
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cancelled: set[int] = set()
        self._go = threading.Event()
        self._current = -1

    def read_forever(self, stream: IO[str]) -> None:
        """On a thread: take requests; cancels and pacing credits act at once."""
        for line in stream:
            message = json.loads(line)
            op = message.get("op")
            if op == "cancel":
                self._cancelled.add(message["id"])
                if message["id"] == self._current:
                    self._go.set()
            elif op == "go":
                if message["id"] == self._current:
                    self._go.set()
            else:
                self.requests.put(message)
        # The web process is gone (or closed us): nothing is left to serve.
        os._exit(0)

    def _pace(self, request_id: int) -> float:
        """Between two steps of paced work: wait for the web process's go-ahead."""
        started = time.monotonic()
        self.channel.send({"id": request_id, "step": True})
        self._go.wait()
        self._go.clear()
        return time.monotonic() - started

    def serve_forever(self) -> None:
        while True:
            message = self.requests.get()
            request_id = int(message["id"])
            self._current = request_id
            self._go.clear()
            try:
                self._serve(request_id, message)
            except Exception as exc:
                self.channel.send({"id": request_id, "error": _error(exc)})
            finally:
                self._current = -1
                self._cancelled.discard(request_id)

    def _serve(self, request_id: int, message: dict[str, Any]) -> None:
        op = message["op"]
        paced = bool(message.get("paced"))
        messages = [Message(m["role"], m["content"]) for m in message.get("messages", [])]
        if op == "chat":
            # A caller that does not stream gets the answer in the last line alone: one line
            # per request instead of one per token.
            streamed = bool(message.get("stream", True))
            pieces: list[str] = []
            for delta in self.instance.stream_chat(
                messages=messages,
                max_tokens=int(message["max_tokens"]),
                temperature=float(message.get("temperature", 0.0)),
                json_schema=message.get("json_schema"),
                timeout_s=float(message.get("timeout_s", self.timeout_s)),
                cancelled=lambda: request_id in self._cancelled,
                between_steps=(lambda: self._pace(request_id)) if paced else None,
            ):
                if delta.usage is None:
                    if streamed:
                        self.channel.send({"id": request_id, "t": delta.content})
                    else:
                        pieces.append(delta.content)
                    continue
                usage = delta.usage
                done: dict[str, Any] = {
                    "finish_reason": delta.finish_reason,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "ttft_s": usage.ttft_s,
                    "total_s": usage.total_s,
                }
                if not streamed:
                    done["content"] = "".join(pieces)
                self.channel.send({"id": request_id, "done": done})
        elif op == "score":
            scores = self.instance.score_choices(
                messages,
                list(message["choices"]),
                between_steps=(lambda: self._pace(request_id)) if paced else None,
            )
            self.channel.send({"id": request_id, "result": scores})
        elif op == "embed":
            vectors = self.instance.embed(list(message["texts"]))
            self.channel.send({"id": request_id, "result": vectors})
        elif op == "smoke":
            self.instance.smoke()
            self.channel.send({"id": request_id, "result": True})
        else:
            raise ValueError(f"unknown op '{op}'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-engine-worker")
    parser.add_argument("--name", required=True)
    parser.add_argument("--path", required=True, type=Path)
    parser.add_argument("--chat-format", default=None)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--role", choices=ROLES, default="interactive")
    args = parser.parse_args(argv)

    die_with_parent()
    faulthandler.enable()  # a native crash leaves a stack (no data) in the log
    channel = _Channel()
    model = LocalModel(args.name, args.path, args.chat_format or None)
    try:
        instance = LlamaInstance(model, threads=args.threads, context=args.context, role=args.role)
        instance.smoke()
    except FileNotFoundError as exc:
        channel.send({"fatal": str(exc)})
        return 3
    except Exception as exc:
        channel.send({"fatal": f"model '{args.name}' failed to load ({type(exc).__name__})"})
        return 3
    channel.send({"ready": True, "pid": os.getpid(), "system_info": system_info()})
    worker = Worker(instance, channel, timeout_s=300.0)
    threading.Thread(target=worker.read_forever, args=(sys.stdin,), daemon=True).start()
    worker.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
