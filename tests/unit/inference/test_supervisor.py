"""Supervised engine workers, with real worker processes and real crashes (signals sent to them).

Each test builds its backend with a thread count no other test uses, so the workers it kills are
its own and never the ones other tests share.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from appliance.config import PROJECT_ROOT
from appliance.errors import BackendUnavailable
from appliance.inference.base import GenerationRequest, Message
from appliance.inference.bundled import BUNDLED
from appliance.inference.engine import system_info
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.supervisor import (
    READY,
    UNAVAILABLE,
    BreakerPolicy,
    retire,
)

SMALL, OTHER = "smollm2-135m", "gemma3-270m"
# Three threads: a spec of these tests' own (the rest of the suite uses one or two).
THREADS = 3


def ask(model: str, text: str, max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(model=model, messages=[Message("user", text)], max_tokens=max_tokens)


@pytest.fixture
def make_engine(models_dir: Path, tmp_path: Path) -> Iterator[Callable[..., LlamaCppBackend]]:
    """Backends whose workers are this test's own, retired afterwards."""
    built: list[LlamaCppBackend] = []

    def build(
        *,
        crashes: int = 3,
        cooldown_s: float = 60.0,
        wrapper: list[str] | None = None,
        timeout_s: float = 120,
        hung_grace_s: float = 30,
    ) -> LlamaCppBackend:
        backend = LlamaCppBackend(
            [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED],
            threads=THREADS,
            context=1024,
            queue_size=4,
            retry_after=1,
            timeout_s=timeout_s,
            hung_grace_s=hung_grace_s,
            wrapper=wrapper or [],
            breaker=BreakerPolicy(
                crashes=crashes, window_s=120, cooldown_s=cooldown_s, backoff_s=0.05
            ),
            start_timeout_s=120,
        )
        built.append(backend)
        return backend

    yield build
    for backend in built:
        for info in backend.models():
            for role in ("interactive", "background", "embedding"):
                retire(backend.worker(info.name, role))


def wrapper_script(tmp_path: Path, body: str) -> list[str]:
    """A shell wrapper the workers start under: `body`, then the worker itself."""
    script = tmp_path / "wrapper.sh"
    script.write_text(f'#!/bin/sh\n{body}\nexec "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
async def test_a_worker_killed_mid_stream_fails_that_stream_only_and_comes_back(
    make_engine: Callable[..., LlamaCppBackend], sig: signal.Signals
) -> None:
    engine = make_engine()
    engine.load(SMALL)
    engine.load(OTHER)
    worker = engine.worker(SMALL)
    first_pid = worker.pid
    assert first_pid is not None

    stream = engine.stream(ask(SMALL, "Count from one to one hundred in words.", 200))
    assert (await anext(stream)).content
    os.kill(first_pid, sig)
    with pytest.raises(BackendUnavailable) as info:
        async for _ in stream:
            pass
    assert "stopped" in info.value.message
    assert info.value.status_code == 503
    assert not engine.gate(SMALL).busy

    # The other model is served while the crashed one restarts.
    other = await engine.generate(ask(OTHER, "Say hi.", 4))
    assert other.usage.completion_tokens > 0
    assert engine.worker(OTHER).state == READY

    # The next request on the crashed model waits for the restart and succeeds.
    again = await engine.generate(ask(SMALL, "Say hi.", 4))
    assert again.usage.completion_tokens > 0
    assert worker.pid not in (None, first_pid)
    assert worker.restarts == 1
    assert sig.name in (worker.reason or "") or worker.reason is None


async def test_a_hung_worker_is_ended_and_replaced(
    make_engine: Callable[..., LlamaCppBackend],
) -> None:
    engine = make_engine(timeout_s=1, hung_grace_s=1)
    engine.load(SMALL)
    worker = engine.worker(SMALL)
    assert worker.pid is not None
    hung = worker.pid
    os.kill(hung, signal.SIGSTOP)  # alive, but never answers again
    with pytest.raises(BackendUnavailable, match="stopped answering"):
        await engine.generate(ask(SMALL, "Say hi.", 4))
    assert not engine.gate(SMALL).busy
    engine.load(SMALL)  # wait for the fresh worker: loading is not part of the answer's second
    # A fresh worker answers (within this test's one-second limit: it may be cut short).
    again = await engine.generate(ask(SMALL, "Say hi.", 4))
    assert again.finish_reason in {"stop", "length", "timeout"}
    assert worker.pid != hung


async def test_repeated_crashes_open_the_breaker_and_name_the_cause(
    make_engine: Callable[..., LlamaCppBackend],
) -> None:
    engine = make_engine(crashes=2)
    engine.load(SMALL)
    engine.load(OTHER)
    worker = engine.worker(SMALL)
    for _ in range(2):
        engine.load(SMALL)  # wait for the (re)started worker
        assert worker.pid is not None
        pid = worker.pid
        os.kill(pid, signal.SIGKILL)
        while worker.pid == pid and worker.state == READY:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.01)
    while worker.state != UNAVAILABLE:  # noqa: ASYNC110 - set by the supervisor's thread
        await asyncio.sleep(0.01)
    assert "crashed 2 times" in (worker.reason or "")
    with pytest.raises(BackendUnavailable, match="unavailable: its worker crashed 2 times"):
        await engine.generate(ask(SMALL, "Say hi."))
    health = await engine.health()
    assert health.ok  # the other model still generates
    assert health.models[SMALL].startswith("unavailable: its worker crashed 2 times")
    assert health.models[OTHER] == READY
    assert SMALL in health.detail
    assert (await engine.generate(ask(OTHER, "Say hi.", 4))).content is not None


async def test_a_build_that_crashes_on_start_is_reported_with_the_fix(
    make_engine: Callable[..., LlamaCppBackend], tmp_path: Path
) -> None:
    # The worker of one model dies of SIGSEGV before it generates, as a native build that does
    # not suit the CPU does; the other model's worker starts normally.
    wrapper = wrapper_script(tmp_path, f'case "$*" in *"--name {OTHER}"*) kill -SEGV $$ ;; esac')
    engine = make_engine(wrapper=wrapper)
    with pytest.raises(BackendUnavailable) as info:
        engine.load(OTHER)
    assert "SIGSEGV before it could generate" in info.value.message
    assert "rebuild it portable" in info.value.message
    engine.load(SMALL)
    health = await engine.health()
    assert health.ok
    assert health.models[OTHER].startswith("unavailable: crashed with SIGSEGV")
    assert (await engine.generate(ask(SMALL, "Say hi.", 4))).usage.completion_tokens > 0


async def test_worker_output_reaches_the_log_without_text(
    make_engine: Callable[..., LlamaCppBackend],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "Jane Doe 078-05-1120"
    wrapper = wrapper_script(tmp_path, f"echo '{secret}' >&2")
    engine = make_engine(wrapper=wrapper)
    with caplog.at_level(logging.WARNING, logger="appliance.engine"):
        engine.load(SMALL)
        for _ in range(100):
            if any(r.getMessage() == "engine worker output" for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    outputs = [r for r in caplog.records if r.getMessage() == "engine worker output"]
    assert outputs, "the worker's stderr line was not logged"
    assert all(secret not in str(r.__dict__.get("detail")) for r in outputs)
    assert any(r.__dict__.get("detail") == f"[{len(secret)} characters withheld]" for r in outputs)


def test_the_installed_engine_is_the_portable_build() -> None:
    """Unless `make install LLAMA_NATIVE=1` opted in, llama.cpp was built without native flags:
    the AVX2 baseline, no AVX-512, no AMX (whose kernels crash on some Intel CPUs)."""
    variant = PROJECT_ROOT / ".venv" / "llama-variant"
    if variant.is_file() and variant.read_text().strip() == "native":
        pytest.skip("this install opted into a native llama.cpp build (LLAMA_NATIVE=1)")
    info = system_info()
    assert "AVX2 = 1" in info
    assert "AMX" not in info
    assert "AVX512" not in info
