"""The embedded engine: llama.cpp models served by supervised worker processes.

Each model runs in a worker process of its own (`appliance.inference.supervisor`): a native crash
there fails the one request it was serving and the worker is restarted, while the web process,
the other models and every other request carry on. llama.cpp serves one generation per instance,
so a `GenerationGate` per model admits one request at a time and queues the rest.

Background work (batch items, marked with `gate.background()`) runs on a second worker of the
model with its own thread count and gate; after each of its steps (tokens, scoring evals) the
worker waits for the web process's go-ahead, which is held back while interactive requests are in
flight: an interactive request never waits for a batch item, only for the step in progress.
Embeddings use a third worker, loaded in embedding mode. Background and embedding workers start
on first use; interactive ones at start-up, and a model is ready once its worker has generated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
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
from appliance.inference.engine import LocalModel as LocalModel
from appliance.inference.gate import (
    INTERACTIVE,
    GenerationGate,
    InteractiveActivity,
    is_background,
)
from appliance.inference.supervisor import (
    READY,
    STARTING,
    UNAVAILABLE,
    BreakerPolicy,
    EngineWorker,
    WorkerSpec,
    worker_for,
)

HUNG_GRACE_S = 30.0
"""How long past its time limit a worker may stay silent before it counts as hung."""

_ERRORS: dict[str, type[InferenceError] | type[InvalidInput]] = {
    "invalid_input": InvalidInput,
    "backend_unavailable": BackendUnavailable,
}


def _rebuild(error: dict[str, Any]) -> Exception:
    """The worker's error as the error tree's exception (its message holds no prompt text)."""
    kind = _ERRORS.get(str(error.get("code")), InferenceError)
    return kind(str(error.get("message", "generation failed")), field=error.get("field"))


class LlamaCppBackend:
    """Serves local GGUF models with llama.cpp workers, one generation per model at a time."""

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
        wrapper: Sequence[str] = (),
        breaker: BreakerPolicy | None = None,
        start_timeout_s: float = 120.0,
        hung_grace_s: float = HUNG_GRACE_S,
    ) -> None:
        self._models = {m.name: m for m in models}
        self._threads = threads
        self._background_threads = background_threads or threads
        self._quiet_s = background_quiet_s
        self._activity = activity
        self._context = context
        self._timeout_s = timeout_s
        self._wrapper = tuple(wrapper)
        self._breaker = breaker or BreakerPolicy()
        self._start_timeout_s = start_timeout_s
        self._hung_grace_s = hung_grace_s
        self._gates = {
            m.name: GenerationGate(name=m.name, queue_size=queue_size, retry_after=retry_after)
            for m in models
        }
        # Background work has its own worker, so it gets its own gate (an unbounded queue:
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
        """The configured models, whether their workers run yet or not."""
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

    def admission_gates(self) -> list[tuple[str, str, GenerationGate]]:
        """Every gate as (lane, model, gate), lanes `interactive`, `background`, `embedding`
        (read by `/metrics` for queue depths)."""
        lanes = {
            "interactive": self._gates,
            "background": self._background_gates,
            "embedding": self._embedding_gates,
        }
        return [(lane, name, gate) for lane, gates in lanes.items() for name, gate in gates.items()]

    def _model(self, name: str) -> LocalModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(
                f"model '{name}' is not served by the embedded engine",
                field="model",
                available=sorted(self._models),
            ) from None

    def worker(self, model: str, role: str = "interactive") -> EngineWorker:
        """The worker serving `model` in `role` (interactive, background or embedding)."""
        threads = self._background_threads if role == "background" else self._threads
        return worker_for(
            WorkerSpec(
                model=self._model(model),
                role=role,
                threads=threads,
                context=self._context,
                wrapper=self._wrapper,
                breaker=self._breaker,
                start_timeout_s=self._start_timeout_s,
            )
        )

    def start(self) -> None:
        """Start every model's interactive worker; each proves itself with one token."""
        for name in self._models:
            self.worker(name).ensure_started()

    def load(self, model: str) -> None:
        """Start `model`'s worker now and wait until it has generated (or failed)."""
        self.worker(model).wait_ready(self._start_timeout_s)

    def model_states(self) -> dict[str, str]:
        """Each model's state: `ready`, `starting`, `restarting` or `unavailable: <why>`."""
        states: dict[str, str] = {}
        for name in self._models:
            worker = self.worker(name)
            states[name] = f"{worker.state}: {worker.reason}" if worker.reason else worker.state
        return states

    async def health(self) -> Health:
        """Healthy once every model's worker has settled and at least one can generate."""
        if not self._models:
            return Health(ok=False, detail="no models configured")
        missing = [m.name for m in self._models.values() if not m.path.is_file()]
        if missing:
            return Health(ok=False, detail=f"missing model files: {', '.join(missing)}")
        self.start()
        states = self.model_states()
        workers = {name: self.worker(name) for name in self._models}
        ready = [n for n, w in workers.items() if w.state == READY]
        starting = [n for n, w in workers.items() if w.state == STARTING]
        down = [n for n, w in workers.items() if w.state == UNAVAILABLE]
        if starting:
            detail = f"starting: {', '.join(starting)}"
        elif down:
            detail = "; ".join(f"{n} {states[n]}" for n in down)
        else:
            detail = f"{len(ready)} models"
        return Health(ok=bool(ready) and not starting, detail=detail, models=states)

    async def _exchange(
        self, worker: EngineWorker, message: dict[str, Any], *, background: bool
    ) -> AsyncIterator[dict[str, Any]]:
        """Send one request to `worker` and yield its answer lines up to the last one.

        Leaving early cancels the request and still waits until the worker has finished it,
        so the gate is only released once the model is really free.
        """
        await worker.ready(self._start_timeout_s)
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def deliver(line: dict[str, Any]) -> None:
            # RuntimeError: the caller's loop is gone, and nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(inbox.put_nowait, line)

        async def receive() -> dict[str, Any]:
            # Silence past the time limit (plus grace) means a hung engine: end that worker.
            if not inbox.empty():  # the common case mid-stream: no timer, no task
                return inbox.get_nowait()
            try:
                async with asyncio.timeout(self._timeout_s + self._hung_grace_s):
                    return await inbox.get()
            except TimeoutError:
                worker.kill()
                raise BackendUnavailable(
                    f"the engine worker of model '{worker.name}' stopped answering; "
                    "it is being restarted"
                ) from None

        request_id = worker.submit(message, deliver)
        finished = False
        try:
            while True:
                line = await receive()
                if "step" in line:
                    if self._activity.busy(self._quiet_s):
                        await self._activity.wait_quiet(self._quiet_s)
                    worker.send({"op": "go", "id": request_id})
                    continue
                if "error" in line:
                    finished = True
                    raise _rebuild(line["error"])
                finished = "t" not in line
                yield line
                if finished:
                    return
        finally:
            if not finished:
                worker.send({"op": "cancel", "id": request_id})
                with anyio.CancelScope(shield=True), contextlib.suppress(BackendUnavailable):
                    while True:
                        line = await receive()
                        if "step" in line:
                            worker.send({"op": "go", "id": request_id})
                        elif "t" not in line:
                            break
                worker.forget(request_id)

    async def _last(
        self, worker: EngineWorker, message: dict[str, Any], *, background: bool
    ) -> dict[str, Any]:
        """The final answer line of a request that does not stream."""
        last: dict[str, Any] | None = None
        async for line in self._exchange(worker, message, background=background):
            last = line
        if last is None or "result" not in last:
            raise InferenceError("the engine worker ended the request without a result")
        return last

    def _chat_message(
        self, request: GenerationRequest, background: bool, streamed: bool
    ) -> dict[str, Any]:
        return {
            "op": "chat",
            "stream": streamed,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "json_schema": request.json_schema,
            "timeout_s": self._timeout_s,
            "paced": background and self._quiet_s > 0,
        }

    async def _deltas(
        self, request: GenerationRequest, background: bool, *, streamed: bool = True
    ) -> AsyncIterator[Delta]:
        """The answer's deltas; unstreamed, the whole answer comes as one delta at the end."""
        worker = self.worker(request.model, "background" if background else "interactive")
        message = self._chat_message(request, background, streamed)
        lines = self._exchange(worker, message, background=background)
        try:
            async for line in lines:
                if "t" in line:
                    yield Delta(content=line["t"])
                    continue
                done = line["done"]
                if "content" in done:
                    yield Delta(content=done["content"])
                yield Delta(
                    content="",
                    finish_reason=done["finish_reason"],
                    usage=Usage(
                        prompt_tokens=done["prompt_tokens"],
                        completion_tokens=done["completion_tokens"],
                        ttft_s=done["ttft_s"],
                        total_s=done["total_s"],
                    ),
                )
        finally:
            await lines.aclose()  # type: ignore[attr-defined]

    async def generate(self, request: GenerationRequest) -> Generation:
        """Generate the whole answer once the model is free."""
        background = is_background()
        self._model(request.model)
        async with self.gate(request.model, background=background).slot():
            pieces: list[str] = []
            last = Delta(content="")
            async for delta in self._deltas(request, background, streamed=False):
                pieces.append(delta.content)
                last = delta
        if last.usage is None:
            raise InferenceError("the engine worker ended the generation without a result")
        return Generation(
            content="".join(pieces),
            model=request.model,
            finish_reason=last.finish_reason or "stop",
            usage=last.usage,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream deltas as the worker produces them; closing the stream stops generation."""
        background = is_background()
        self._model(request.model)
        async with self.gate(request.model, background=background).slot():
            deltas = self._deltas(request, background)
            try:
                async for delta in deltas:
                    yield delta
            finally:
                with anyio.CancelScope(shield=True):
                    await deltas.aclose()  # type: ignore[attr-defined]

    async def score_choices(
        self, request: GenerationRequest, choices: list[str]
    ) -> dict[str, float]:
        """Log-probability of each of `choices` as the answer (constrained-choice scoring)."""
        self._model(request.model)
        if not choices:
            raise InvalidInput("at least one choice is needed", field="choices")
        background = is_background()
        worker = self.worker(request.model, "background" if background else "interactive")
        message = {
            "op": "score",
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "choices": list(choices),
            "paced": background and self._quiet_s > 0,
        }
        async with self.gate(request.model, background=background).slot():
            line = await self._last(worker, message, background=background)
        return {str(k): float(v) for k, v in line["result"].items()}

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One embedding vector per text: the mean of the model's token vectors."""
        local = self._model(model)
        if not texts:
            raise InvalidInput("at least one input is needed", field="input")
        worker = self.worker(local.name, "embedding")
        async with self._embedding_gates[local.name].slot():
            line = await self._last(worker, {"op": "embed", "texts": list(texts)}, background=False)
        return [[float(x) for x in vector] for vector in line["result"]]
