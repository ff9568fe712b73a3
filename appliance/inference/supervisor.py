"""Supervised engine workers: each embedded model instance in a process of its own.

The web process never loads llama.cpp. It starts one worker process per (model, role)
(`appliance.inference.worker`) and talks to it over pipes. A worker that dies — a segfault in
native code, an OOM kill, `kill -9` — fails only the request it was serving (with
`BackendUnavailable`) and is started again after a short backoff. Crashes that repeat open the
model's breaker: the model reports unavailable, with the cause and the fix, until a cool-down has
passed and a fresh worker proves itself again.

A worker counts as ready only once it has generated a token (the worker does that before it says
ready), so a build that cannot run on this CPU is found at start-up, not on a user's request.

Workers are shared by every backend of the process that asks for the same model, role, threads
and context (as loaded models were before): the test suite builds many apps in one process.
The supervision runs on plain threads, so apps on different event loops can share a worker.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import anyio

from appliance.errors import BackendUnavailable
from appliance.inference.engine import LocalModel

log = logging.getLogger("appliance.engine")

STARTING, READY, RESTARTING, UNAVAILABLE = "starting", "ready", "restarting", "unavailable"

REBUILD_HINT = (
    "the llama.cpp build crashed on this CPU; rebuild it portable: `make install` "
    "(without LLAMA_NATIVE=1), or `CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --no-cache-dir "
    "--force-reinstall llama-cpp-python`"
)
_NATIVE_CRASHES = frozenset({signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE})

# Lines a worker may write to stderr that are passed to the log as they are: Python's fault
# handler (stack frames, no data) and llama.cpp's function-prefixed diagnostics (sizes, names).
# Anything else could quote input (a grammar error quotes its grammar) and is withheld.
_LOGGABLE = re.compile(
    r"^(Fatal Python error|Current thread|Thread 0x|  File \"|Extension modules|"
    r"(llama|ggml|gguf|llm_load|load_tensors|print_info|init)[a-z_]*: )"
)


_FAULT = ("Fatal Python error", "Current thread", "Thread 0x", "  File ", "Extension modules")


@dataclass(frozen=True)
class BreakerPolicy:
    """When repeated crashes make a model unavailable, and for how long."""

    crashes: int = 3
    """Crashes within `window_s` that open the breaker."""
    window_s: float = 60.0
    cooldown_s: float = 30.0
    """How long an open breaker waits before a fresh worker is tried again."""
    backoff_s: float = 0.25
    """First restart delay; it doubles with each recent crash, up to `max_backoff_s`."""
    max_backoff_s: float = 8.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker serves and how; equal specs share one worker in a process."""

    model: LocalModel
    role: str
    threads: int
    context: int
    wrapper: tuple[str, ...] = ()
    """A command the worker runs under (e.g. `taskset -c 1`); empty runs it directly."""
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    start_timeout_s: float = 120.0

    def command(self) -> list[str]:
        return [
            *self.wrapper,
            sys.executable,
            "-m",
            "appliance.inference.worker",
            "--name",
            self.model.name,
            "--path",
            str(self.model.path),
            "--chat-format",
            self.model.chat_format or "",
            "--threads",
            str(self.threads),
            "--context",
            str(self.context),
            "--role",
            self.role,
        ]


def describe_exit(returncode: int, *, ready: bool) -> str:
    """Why a worker stopped, in words an operator can act on."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            return f"killed by {name} (out of memory, or stopped by an operator)"
        if -returncode in _NATIVE_CRASHES and not ready:
            return f"crashed with {name} before it could generate; {REBUILD_HINT}"
        return f"crashed with {name}"
    return f"exited with status {returncode}"


Deliver = Callable[[dict[str, Any]], None]


class EngineWorker:
    """One supervised worker process: start, watch, restart, and route its answers."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.state = STARTING
        self.reason: str | None = None
        self.pid: int | None = None
        self.system_info: str | None = None
        self.restarts = 0
        self._crashes: deque[float] = deque()
        self._proc: subprocess.Popen[str] | None = None
        self._pending: dict[int, Deliver] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.model.name

    def ensure_started(self) -> None:
        """Start supervising (once); the worker loads and proves itself in the background."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._supervise, name=f"engine-{self.name}-{self.spec.role}", daemon=True
                )
                self._thread.start()

    # -- the web process's side of a request --------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker serves; `BackendUnavailable` if its breaker is open."""
        self.ensure_started()
        with self._changed:
            self._changed.wait_for(
                lambda: self.state in (READY, UNAVAILABLE) or self._stopping.is_set(), timeout
            )
            self._raise_unless_ready()

    async def ready(self, limit_s: float) -> None:
        """`wait_ready` for the event loop (no thread hop when the worker is up)."""
        if self.state == READY:
            return
        await anyio.to_thread.run_sync(self.wait_ready, limit_s)

    def _raise_unless_ready(self) -> None:
        if self.state == READY:
            return
        if self.state == UNAVAILABLE:
            raise BackendUnavailable(f"model '{self.name}' is unavailable: {self.reason}")
        raise BackendUnavailable(f"model '{self.name}' is still starting; retry shortly")

    def submit(self, message: dict[str, Any], deliver: Deliver) -> int:
        """Send a request; `deliver` gets each answer line (on the supervisor's thread)."""
        with self._lock:
            self._raise_unless_ready()
            request_id = next(self._ids)
            self._pending[request_id] = deliver
            try:
                self._write({**message, "id": request_id})
            except OSError:
                del self._pending[request_id]
                raise BackendUnavailable(f"the engine worker of '{self.name}' stopped") from None
        return request_id

    def send(self, message: dict[str, Any]) -> None:
        """A control line (cancel, go); lost quietly if the worker is gone."""
        with self._lock, contextlib.suppress(OSError):
            self._write(message)

    def kill(self) -> None:
        """End a worker that stopped answering; it is restarted like one that crashed."""
        with self._changed:
            if self._proc is not None:
                self._proc.kill()
                # Requests from now on wait for the replacement instead of meeting the corpse.
                self._proc = None
                self.state = RESTARTING
                self._changed.notify_all()

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise BrokenPipeError
        proc.stdin.write(json.dumps(message, separators=(",", ":")) + "\n")
        proc.stdin.flush()

    # -- supervision --------------------------------------------------------------------------

    def _set(self, state: str, reason: str | None = None) -> None:
        with self._changed:
            self.state = state
            self.reason = reason
            self._changed.notify_all()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, outcome = self._run_once()
            except Exception as exc:
                # A supervisor that stopped reading would leave requests waiting on a live
                # worker: end the worker and treat it as a crash instead.
                log.error(
                    "engine worker supervision failed",
                    extra={"model": self.name, "event": "engine.worker_restart"},
                    exc_info=True,
                )
                self.kill()
                ready, outcome = True, f"its supervision failed ({type(exc).__name__})"
            if self._stopping.is_set():
                break
            self._fail_pending(outcome)
            policy = self.spec.breaker
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > policy.window_s:
                self._crashes.popleft()
            self.restarts += 1
            if not ready or len(self._crashes) >= policy.crashes:
                # A worker that cannot start, or keeps crashing: the breaker opens.
                reason = (
                    outcome
                    if not ready
                    else f"its worker crashed {len(self._crashes)} times in "
                    f"{policy.window_s:.0f} s (last: {outcome})"
                )
                self._set(UNAVAILABLE, reason)
                log.error(
                    "engine model unavailable",
                    extra={"model": self.name, "event": "engine.breaker_open", "detail": reason},
                )
                self._crashes.clear()
                self._stopping.wait(policy.cooldown_s)
                continue
            self._set(RESTARTING, outcome)
            log.warning(
                "engine worker stopped; restarting",
                extra={"model": self.name, "event": "engine.worker_restart", "detail": outcome},
            )
            delay = min(policy.backoff_s * 2 ** (len(self._crashes) - 1), policy.max_backoff_s)
            self._stopping.wait(delay)

    def _run_once(self) -> tuple[bool, str]:
        """Start a worker and serve its answers until it stops: (was it ready, why it stopped)."""
        try:
            proc = subprocess.Popen(
                self.spec.command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                close_fds=True,
            )
        except OSError as exc:
            return False, f"the worker could not be started ({type(exc).__name__})"
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(target=self._log_stderr, args=(proc.stderr,), daemon=True).start()
        # A worker that neither says ready nor fails is stopped after the start time-out.
        watchdog = threading.Timer(self.spec.start_timeout_s, proc.kill)
        watchdog.daemon = True
        watchdog.start()
        with self._lock:
            self._proc = proc
        try:
            hello = _next_message(proc.stdout)
        finally:
            watchdog.cancel()
        if hello is None:
            return False, describe_exit(proc.wait(), ready=False)
        if "fatal" in hello:
            proc.wait()
            return False, str(hello["fatal"])
        self.pid = int(hello["pid"])
        self.system_info = str(hello.get("system_info", ""))
        self._set(READY)
        log.info(
            "engine worker ready",
            extra={"model": self.name, "event": "engine.worker_ready", "detail": self.spec.role},
        )
        while (message := _next_message(proc.stdout)) is not None:
            request_id = int(message.get("id", -1))
            with self._lock:
                deliver = self._pending.get(request_id)
                if deliver is not None and ("step" not in message and "t" not in message):
                    del self._pending[request_id]
            if deliver is not None:
                deliver(message)
        with self._changed:
            self.state = RESTARTING
            self._proc = None
        return True, describe_exit(proc.wait(), ready=True)

    def _fail_pending(self, outcome: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for request_id, deliver in pending.items():
            deliver(
                {
                    "id": request_id,
                    "error": {
                        "code": "backend_unavailable",
                        "message": f"the engine worker of model '{self.name}' stopped "
                        f"({outcome.split(';')[0]}); it is being restarted",
                    },
                }
            )

    def _log_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            printed = line.rstrip()
            if not printed:
                continue
            known = _LOGGABLE.match(printed)
            # llama.cpp's own notes are informational; a fault or anything unknown is a warning.
            log.log(
                logging.INFO if known and not printed.startswith(_FAULT) else logging.WARNING,
                "engine worker output",
                extra={
                    "model": self.name,
                    "event": "engine.worker_output",
                    # Only shapes known to hold no input pass; the rest is reduced to a length.
                    "detail": printed[:500] if known else f"[{len(printed)} characters withheld]",
                },
            )

    def stop(self) -> None:
        """Stop supervising and end the worker (closing its stdin ends it; then a kill)."""
        self._stopping.set()
        with self._changed:
            proc, self._proc = self._proc, None
            self._changed.notify_all()
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


def _next_message(stream: IO[str]) -> dict[str, Any] | None:
    """The next protocol line; None at the end. Anything else on the pipe (a wrapper's own
    output) is skipped, never parsed as an answer."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            return message
    return None


_workers: dict[WorkerSpec, EngineWorker] = {}
_workers_lock = threading.Lock()


def worker_for(spec: WorkerSpec) -> EngineWorker:
    """The process's worker for `spec`, created (not yet started) on first use."""
    with _workers_lock:
        worker = _workers.get(spec)
        if worker is None:
            worker = _workers[spec] = EngineWorker(spec)
        return worker


def retire(worker: EngineWorker) -> None:
    """Stop `worker` and forget it, so the next request for its spec starts a fresh one."""
    with _workers_lock:
        if _workers.get(worker.spec) is worker:
            del _workers[worker.spec]
    worker.stop()


@atexit.register
def stop_all() -> None:
    """End every worker of this process."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.stop()
