"""The embedded engine: llama.cpp in-process through llama-cpp-python.

Each model file is loaded once per process and shared by every backend instance. llama.cpp
contexts are not thread-safe, so a `GenerationGate` lets one generation run per model; the
generation itself runs on a worker thread so the event loop keeps answering (`/healthz`).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from appliance.errors import BackendUnavailable, InferenceError, InvalidInput, ModelNotFound
from appliance.inference.base import (
    Capabilities,
    Delta,
    Generation,
    GenerationRequest,
    Health,
    ModelInfo,
    Usage,
)
from appliance.inference.gate import GenerationGate


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file the embedded engine serves under `name`."""

    name: str
    path: Path
    chat_format: str | None = None


_loaded: dict[tuple[str, int, int], Any] = {}
_load_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free the models while the interpreter is still whole; left to garbage collection at
    # shutdown, llama.cpp's destructors run after their module globals are gone.
    with _load_lock:
        for llama in _loaded.values():
            llama.close()
        _loaded.clear()


def _load(model: LocalModel, *, threads: int, context: int) -> Any:
    key = (str(model.path.resolve()), threads, context)
    with _load_lock:
        llama = _loaded.get(key)
        if llama is None:
            from llama_cpp import Llama

            if not model.path.is_file():
                raise BackendUnavailable(f"model file for '{model.name}' is missing: {model.path}")
            try:
                llama = Llama(
                    model_path=str(model.path),
                    n_ctx=context,
                    n_threads=threads,
                    chat_format=model.chat_format,
                    verbose=False,
                )
            except Exception as exc:
                raise BackendUnavailable(f"model '{model.name}' failed to load: {exc}") from exc
            _loaded[key] = llama
        return llama


_END = object()


class LlamaCppBackend:
    """Serves local GGUF models with llama.cpp, one generation per model at a time."""

    name = "llamacpp"
    capabilities = Capabilities(
        streaming=True, json_schema=True, embeddings=False, choice_scoring=True
    )

    def __init__(
        self,
        models: list[LocalModel],
        *,
        threads: int,
        context: int,
        queue_size: int,
        retry_after: int,
        timeout_s: float,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._threads = threads
        self._context = context
        self._timeout_s = timeout_s
        self._gates = {
            m.name: GenerationGate(name=m.name, queue_size=queue_size, retry_after=retry_after)
            for m in models
        }

    def models(self) -> list[ModelInfo]:
        """The configured models, whether loaded yet or not."""
        return [
            ModelInfo(
                name=m.name,
                backend=self.name,
                context_length=self._context,
                details={"file": m.path.name, "format": "gguf"},
            )
            for m in self._models.values()
        ]

    def gate(self, model: str) -> GenerationGate:
        """The admission gate of `model` (exposed for health and tests)."""
        return self._gates[self._model(model).name]

    def _model(self, name: str) -> LocalModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(
                f"model '{name}' is not served by the embedded engine",
                field="model",
                available=sorted(self._models),
            ) from None

    def load(self, model: str) -> None:
        """Load `model` now instead of on first use."""
        _load(self._model(model), threads=self._threads, context=self._context)

    async def health(self) -> Health:
        """Healthy when every model file is present; loading happens on demand."""
        missing = [m.name for m in self._models.values() if not m.path.is_file()]
        if not self._models:
            return Health(ok=False, detail="no models configured")
        if missing:
            return Health(ok=False, detail=f"missing model files: {', '.join(missing)}")
        return Health(ok=True, detail=f"{len(self._models)} models")

    def _completion_args(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": True,
        }
        if request.json_schema is not None:
            args["response_format"] = {"type": "json_object", "schema": request.json_schema}
        return args

    def _stream_sync(self, request: GenerationRequest, stop: threading.Event) -> Iterator[Delta]:
        """Generate on the calling thread; stops early when `stop` is set or time runs out."""
        llama = _load(self._model(request.model), threads=self._threads, context=self._context)
        deadline = time.monotonic() + self._timeout_s
        started = time.perf_counter()
        first: float | None = None
        completion_tokens = 0
        finish = "stop"
        with _engine_errors():
            chunks = llama.create_chat_completion(**self._completion_args(request))
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    if text:
                        completion_tokens += 1
                        if first is None:
                            first = time.perf_counter()
                        yield Delta(content=text)
                    if stop.is_set():
                        finish = "cancelled"
                        break
                    if time.monotonic() > deadline:
                        finish = "timeout"
                        break
            finally:
                chunks.close()
        total = time.perf_counter() - started
        yield Delta(
            content="",
            finish_reason=finish,
            usage=Usage(
                # After a generation the context holds the prompt plus the generated tokens.
                prompt_tokens=max(int(llama.n_tokens) - completion_tokens, 0),
                completion_tokens=completion_tokens,
                ttft_s=(first - started) if first is not None else total,
                total_s=total,
            ),
        )

    def _generate_sync(self, request: GenerationRequest) -> Generation:
        pieces: list[str] = []
        last = Delta(content="")
        for delta in self._stream_sync(request, threading.Event()):
            pieces.append(delta.content)
            last = delta
        assert last.usage is not None
        return Generation(
            content="".join(pieces),
            model=request.model,
            finish_reason=last.finish_reason or "stop",
            usage=last.usage,
        )

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate on a worker thread once the model is free."""
        async with self.gate(request.model).slot():
            # Not abandoned on cancel: the gate stays held until llama.cpp is really done.
            return await anyio.to_thread.run_sync(self._generate_sync, request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas produced on a worker thread; closing the stream stops generation."""
        async with self.gate(request.model).slot():
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                try:
                    for delta in self._stream_sync(request, stop):
                        loop.call_soon_threadsafe(queue.put_nowait, delta)
                        if stop.is_set():
                            break
                    loop.call_soon_threadsafe(queue.put_nowait, _END)
                except BaseException as exc:  # handed to the consumer, re-raised there
                    loop.call_soon_threadsafe(queue.put_nowait, exc)

            worker = loop.run_in_executor(None, produce)
            try:
                while True:
                    item = await queue.get()
                    if item is _END:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    assert isinstance(item, Delta)
                    yield item
            finally:
                stop.set()
                with anyio.CancelScope(shield=True):
                    await worker

    async def score_choices(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float]:
        """Log-probability of each of `choices` as the answer (constrained-choice scoring)."""
        from appliance.inference.choice import score_choices_sync

        model = self._model(request.model)
        if not choices:
            raise InvalidInput("at least one choice is needed", field="choices")

        def run() -> dict[str, float]:
            llama = _load(model, threads=self._threads, context=self._context)
            with _engine_errors():
                return score_choices_sync(llama, model.chat_format, request.messages, choices)

        async with self.gate(request.model).slot():
            return await anyio.to_thread.run_sync(run)


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Map llama.cpp's exceptions into the error tree without echoing any prompt text."""
    try:
        yield
    except (InferenceError, InvalidInput, BackendUnavailable):
        raise
    except ValueError as exc:
        if "context window" in str(exc):
            raise InvalidInput(
                "the messages do not fit the model's context window", field="messages"
            ) from exc
        raise InferenceError(f"generation failed ({type(exc).__name__})") from exc
    except Exception as exc:
        raise InferenceError(f"generation failed ({type(exc).__name__})") from exc
