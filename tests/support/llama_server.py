"""llama-cpp-python's OpenAI-compatible server, started for real on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from tests.support.ports import free_port, wait_ok


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF file under `alias`.

    `interrupt_requests=False` lets a running stream finish when another request arrives (the
    server's default cuts it short). With `access_log`, the server's own access log (uvicorn's
    one line per request, no bodies) goes to that file, unbuffered, so it survives `kill()`.
    `batch_threads` are the threads of prompt evaluation; the server's default is one per CPU,
    whatever `threads` says.
    """

    def __init__(
        self,
        model: Path,
        *,
        alias: str,
        threads: int = 1,
        context: int = 2048,
        interrupt_requests: bool = True,
        access_log: Path | None = None,
        batch_threads: int | None = None,
    ) -> None:
        self.port = free_port()
        self.alias = alias
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.access_log = access_log
        self._args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(context), "--n_threads", str(threads), "--verbose", "False",
            "--interrupt_requests", str(interrupt_requests),
        ]  # fmt: skip
        if batch_threads is not None:
            self._args += ["--n_threads_batch", str(batch_threads)]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (for CPU accounting); only while it runs."""
        if self._process is None:
            raise RuntimeError("the llama.cpp server is not running")
        return self._process.pid

    def __enter__(self) -> LlamaServer:
        log = None if self.access_log is None else self.access_log.open("ab")
        try:
            self._process = subprocess.Popen(
                self._args,
                stdout=subprocess.DEVNULL if log is None else log,
                stderr=subprocess.PIPE,
                env=os.environ | {"PYTHONUNBUFFERED": "1"},
            )
        finally:
            if log is not None:
                log.close()
        try:
            wait_ok(
                f"{self.base_url}/models",
                timeout=90,
                process=self._process,
                name="llama_cpp.server",
                output=self._stderr_tail,
                interval=0.2,
            )
        except RuntimeError:
            self.__exit__(None, None, None)
            raise
        return self

    def _stderr_tail(self) -> str:
        stderr = self._process.stderr if self._process is not None else None
        return stderr.read().decode()[-2000:] if stderr is not None else ""

    def kill(self) -> None:
        """`kill -9` the server: the node dies mid-request, as on a crash or a power cut."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)

    def requests(self, path: str = "/v1/chat/completions") -> int:
        """Requests to `path` the server itself logged as answered 200 (needs `access_log`)."""
        assert self.access_log is not None, "start the server with access_log to count"
        if not self.access_log.exists():
            return 0
        marker = f'"POST {path} HTTP/1.1" 200'
        return sum(marker in line for line in self.access_log.read_text().splitlines())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
