"""The embedded engine: llama.cpp in-process through llama-cpp-python.

Each model file is loaded once per process and shared by every backend instance. llama.cpp
contexts are not thread-safe, so a `GenerationGate` lets one generation run per model; the
generation itself runs on a worker thread so the event loop keeps answering (`/healthz`).

Background work (batch items, marked with `gate.background()`) runs on a second instance of the
model with its own thread count and gate, and pauses between its steps (tokens, scoring evals)
while interactive requests are in flight: an interactive request never waits for a batch item,
only for the step in progress. Embeddings use a third instance, loaded in embedding mode.
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
from appliance.inference.gate import (
    INTERACTIVE,
    GenerationGate,
    InteractiveActivity,
    is_background,
)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF file the embedded engine serves under `name`."""

    name: str
    path: Path
    chat_format: str | None = None


_loaded: dict[tuple[str, int, int, str], Any] = {}
_load_lock = threading.Lock()


@atexit.register
def _close_all() -> None:
    # Free the models while the interpreter is still whole; left to garbage collection at
    # shutdown, llama.cpp's destructors run after their module globals are gone.
    with _load_lock:
        for llama in _loaded.values():
            llama.close()
        _loaded.clear()


def _load(model: LocalModel, *, threads: int, context: int, role: str = "interactive") -> Any:
    """The shared instance of `model` for `role`: `interactive`, `background` or `embedding`."""
    key = (str(model.path.resolve()), threads, context, role)
    with _load_lock:
        llama = _loaded.get(key)
        if llama is None:
            import llama_cpp

            if not model.path.is_file():
                raise BackendUnavailable(f"model file for '{model.name}' is missing: {model.path}")
            # A chat model has no pooling of its own: mean-pool the token vectors.
            embedding: dict[str, Any] = (
                {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}
                if role == "embedding"
                else {}
            )
            try:
                llama = llama_cpp.Llama(
                    model_path=str(model.path),
                    n_ctx=context,
                    n_threads=threads,
                    chat_format=model.chat_format,
                    verbose=False,
                    **embedding,
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
        streaming=True, json_schema=True, embeddings=True, choice_scoring=True
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
        background_threads: int | None = None,
        background_quiet_s: float = 0.0,
        activity: InteractiveActivity = INTERACTIVE,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._threads = threads
        self._background_threads = background_threads or threads
        self._quiet_s = background_quiet_s
        self._activity = activity
        self._context = context
        self._timeout_s = timeout_s
        self._gates = {
            m.name: GenerationGate(name=m.name, queue_size=queue_size, retry_after=retry_after)
            for m in models
        }
        # Background work has its own instance, so it gets its own gate (an unbounded queue:
        # the runner bounds how many items run at once).
        self._background_gates = {
            m.name: GenerationGate(name=m.name, queue_size=1_000_000, retry_after=retry_after)
            for m in models
        }
        self._embedding_gates = {
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

    def gate(self, model: str, *, background: bool = False) -> GenerationGate:
        """The admission gate of `model` (exposed for health and tests)."""
        gates = self._background_gates if background else self._gates
        return gates[self._model(model).name]

    def _instance(self, model: str, *, background: bool) -> Any:
        if background:
            return _load(
                self._model(model),
                threads=self._background_threads,
                context=self._context,
                role="background",
            )
        return _load(self._model(model), threads=self._threads, context=self._context)

    def _pause(self, background: bool) -> float:
        """Between two steps of background work: wait while interactive traffic is busy."""
        if not background:
            return 0.0
        return self._activity.yield_to_interactive(self._quiet_s)

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

    def _stream_sync(
        self, request: GenerationRequest, stop: threading.Event, background: bool = False
    ) -> Iterator[Delta]:
        """Generate on the calling thread; stops early when `stop` is set or time runs out."""
        llama = self._instance(request.model, background=background)
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
                    # Time spent giving way to interactive requests does not count as slow.
                    deadline += self._pause(background)
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

    def _generate_sync(self, request: GenerationRequest, background: bool = False) -> Generation:
        pieces: list[str] = []
        last = Delta(content="")
        for delta in self._stream_sync(request, threading.Event(), background):
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
        background = is_background()
        async with self.gate(request.model, background=background).slot():
            # Not abandoned on cancel: the gate stays held until llama.cpp is really done.
            return await anyio.to_thread.run_sync(self._generate_sync, request, background)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas produced on a worker thread; closing the stream stops generation."""
        background = is_background()
        async with self.gate(request.model, background=background).slot():
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                try:
                    for delta in self._stream_sync(request, stop, background):
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

        background = is_background()

        def run() -> dict[str, float]:
            llama = self._instance(model.name, background=background)
            with _engine_errors():
                return score_choices_sync(
                    llama,
                    model.chat_format,
                    request.messages,
                    choices,
                    between_steps=(lambda: self._pause(True)) if background else None,
                )

        async with self.gate(request.model, background=background).slot():
            return await anyio.to_thread.run_sync(run)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One embedding vector per text: the mean of the model's token vectors."""
        local = self._model(model)
        if not texts:
            raise InvalidInput("at least one input is needed", field="input")

        def run() -> list[list[float]]:
            llama = _load(local, threads=self._threads, context=self._context, role="embedding")
            # One input is embedded in one batch; longer would be cut silently, so refuse it.
            limit = int(llama.n_batch)
            for index, text in enumerate(texts):
                count = len(llama.tokenize(text.encode("utf-8"), add_bos=True))
                if count > limit:
                    raise InvalidInput(
                        f"input {index} is {count} tokens; '{local.name}' embeds at most {limit}",
                        field="input",
                    )
            with _engine_errors():
                vectors = llama.embed(texts)
            return [[float(x) for x in vector] for vector in vectors]

        async with self._embedding_gates[local.name].slot():
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
