"""The embedded llama.cpp backend with the real bundled models (small and CPU-only), served by
real worker processes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import BackendBusy, BackendUnavailable, InvalidInput, ModelNotFound
from appliance.inference.base import Backend, Delta, GenerationRequest, Message
from appliance.inference.bundled import BUNDLED
from appliance.inference.engine import LlamaInstance
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel

THREADS, CONTEXT = 2, 2048
MODEL_NAMES = [m.name for m in BUNDLED]
LABEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"enum": ["it", "hr", "finance"]}},
    "required": ["label"],
}


def local_models(models_dir: Path) -> list[LocalModel]:
    return [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED]


@pytest.fixture(scope="module")
def make_backend(models_dir: Path) -> Callable[..., LlamaCppBackend]:
    def build(
        models: list[LocalModel] | None = None,
        *,
        queue_size: int = 4,
        timeout_s: float = 120.0,
        context: int = CONTEXT,
    ) -> LlamaCppBackend:
        return LlamaCppBackend(
            local_models(models_dir) if models is None else models,
            threads=THREADS,
            context=context,
            queue_size=queue_size,
            retry_after=3,
            timeout_s=timeout_s,
        )

    return build


@pytest.fixture(scope="module")
def backend(make_backend: Callable[..., LlamaCppBackend]) -> LlamaCppBackend:
    return make_backend()


def ask(model: str, text: str, max_tokens: int = 16, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(
        model=model, messages=[Message("user", text)], max_tokens=max_tokens, **kwargs
    )


def test_is_a_backend(backend: LlamaCppBackend) -> None:
    assert isinstance(backend, Backend)
    assert backend.capabilities.streaming
    assert backend.capabilities.json_schema


def test_models_lists_the_configured_models(backend: LlamaCppBackend) -> None:
    infos = backend.models()
    assert [i.name for i in infos] == MODEL_NAMES
    assert {i.backend for i in infos} == {"llamacpp"}
    assert {i.context_length for i in infos} == {CONTEXT}
    assert [i.details["file"] for i in infos] == [m.filename for m in BUNDLED]


async def test_health_is_ok_once_every_model_has_generated(backend: LlamaCppBackend) -> None:
    for name in MODEL_NAMES:
        backend.load(name)  # start the worker and wait for its first token
    health = await backend.health()
    assert health.ok
    assert health.models == dict.fromkeys(MODEL_NAMES, "ready")
    assert str(len(BUNDLED)) in health.detail


@pytest.mark.parametrize("model", MODEL_NAMES)
async def test_generate(backend: LlamaCppBackend, model: str) -> None:
    result = await backend.generate(ask(model, "Say hello in one short sentence.", max_tokens=16))
    assert result.content.strip()
    assert result.model == model
    assert result.finish_reason in {"stop", "length"}
    usage = result.usage
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 16
    assert 0 <= usage.ttft_s <= usage.total_s
    assert usage.tokens_per_s >= 0
    assert not backend.gate(model).busy


async def test_max_tokens_caps_the_answer(backend: LlamaCppBackend) -> None:
    result = await backend.generate(ask("smollm2-135m", "Write a long story about a cat.", 3))
    assert result.finish_reason == "length"
    assert 0 < result.usage.completion_tokens <= 3


async def test_stream_deltas_add_up_to_the_final_usage(backend: LlamaCppBackend) -> None:
    deltas = [d async for d in backend.stream(ask("smollm2-135m", "Name three colours.", 24))]
    *pieces, last = deltas
    assert all(isinstance(d, Delta) for d in deltas)
    assert last.usage is not None
    assert last.content == ""
    assert last.finish_reason in {"stop", "length"}
    assert all(d.usage is None and d.finish_reason is None for d in pieces)
    assert all(d.content for d in pieces)
    text = "".join(d.content for d in pieces)
    assert text.strip()
    assert last.usage.completion_tokens == len(pieces) <= 24
    assert last.usage.prompt_tokens > 0
    assert 0 <= last.usage.ttft_s <= last.usage.total_s
    assert not backend.gate("smollm2-135m").busy


async def test_an_unstreamed_answer_is_the_streamed_one_in_a_single_line(
    backend: LlamaCppBackend,
) -> None:
    """`generate` asks the worker for the whole answer in its last line (no line per token);
    at temperature 0 it is exactly what the stream delivers piece by piece."""
    request = ask("smollm2-135m", "Name three animals.", 20)
    streamed = [d async for d in backend.stream(request)]
    deltas = [d async for d in backend._deltas(request, False, streamed=False)]
    assert [d.usage is None for d in deltas] == [True, False]
    whole = await backend.generate(request)
    assert whole.content == deltas[0].content == "".join(d.content for d in streamed)
    last = streamed[-1].usage
    assert last is not None
    assert whole.usage.completion_tokens == last.completion_tokens == len(streamed) - 1


@pytest.mark.parametrize("model", MODEL_NAMES)
async def test_json_schema_constrains_the_output(backend: LlamaCppBackend, model: str) -> None:
    request = GenerationRequest(
        model=model,
        messages=[
            Message(
                "user",
                "Classify this ticket as it, hr or finance and answer in JSON: "
                "'My laptop does not boot after the update.'",
            )
        ],
        max_tokens=64,
        json_schema=LABEL_SCHEMA,
    )
    result = await backend.generate(request)
    data = json.loads(result.content)
    assert isinstance(data, dict)
    assert data["label"] in {"it", "hr", "finance"}
    assert result.finish_reason == "stop"


def test_each_model_has_one_worker_process_per_process(
    make_backend: Callable[..., LlamaCppBackend], models_dir: Path
) -> None:
    model = local_models(models_dir)[0]
    first = make_backend()
    first.load(model.name)
    worker = first.worker(model.name)
    assert worker.pid is not None and worker.pid != os.getpid()  # never in the web process
    second = make_backend()  # a second backend instance (another app in the same process)
    second.load(model.name)
    assert second.worker(model.name) is worker
    assert second.worker(model.name).pid == worker.pid
    # Another role is another process.
    assert first.worker(model.name, "embedding") is not worker


async def test_unknown_model_is_model_not_found(backend: LlamaCppBackend) -> None:
    with pytest.raises(ModelNotFound) as info:
        await backend.generate(ask("gpt-99", "hi"))
    assert info.value.field == "model"
    assert info.value.extra["available"] == sorted(MODEL_NAMES)
    assert info.value.status_code == 404
    with pytest.raises(ModelNotFound):
        async for _ in backend.stream(ask("gpt-99", "hi")):
            pytest.fail("no delta for an unknown model")
    with pytest.raises(ModelNotFound):
        backend.gate("gpt-99")


async def test_missing_model_file_is_backend_unavailable(
    make_backend: Callable[..., LlamaCppBackend], tmp_path: Path
) -> None:
    missing = make_backend([LocalModel("ghost", tmp_path / "ghost.gguf")])
    health = await missing.health()
    assert not health.ok
    assert "ghost" in health.detail
    with pytest.raises(BackendUnavailable) as info:
        await missing.generate(ask("ghost", "hi"))
    assert "ghost.gguf" in info.value.message
    assert info.value.status_code == 503
    with pytest.raises(BackendUnavailable):
        async for _ in missing.stream(ask("ghost", "hi")):
            pytest.fail("no delta without a model file")
    assert not missing.gate("ghost").busy
    assert missing.gate("ghost").waiting == 0


async def test_unloadable_model_file_is_backend_unavailable(
    make_backend: Callable[..., LlamaCppBackend], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 100)
    broken = make_backend([LocalModel("junk", junk)])
    with pytest.raises(BackendUnavailable, match="failed to load"):
        await broken.generate(ask("junk", "hi"))
    assert not broken.gate("junk").busy
    health = await broken.health()  # the worker tried, failed, and says so
    assert not health.ok
    assert "junk" in health.detail and "failed to load" in health.detail
    assert health.models["junk"].startswith("unavailable")


async def test_no_models_is_unhealthy(make_backend: Callable[..., LlamaCppBackend]) -> None:
    health = await make_backend([]).health()
    assert not health.ok
    assert "no models" in health.detail


async def test_closing_a_stream_early_releases_the_gate(backend: LlamaCppBackend) -> None:
    gate = backend.gate("smollm2-135m")
    stream = backend.stream(ask("smollm2-135m", "Count from one to forty in words.", 48))
    first = await anext(stream)
    assert first.content
    assert gate.busy
    await stream.aclose()  # type: ignore[attr-defined]
    assert not gate.busy
    assert gate.waiting == 0
    # The model is usable right away.
    result = await backend.generate(ask("smollm2-135m", "Say hi.", 4))
    assert result.content


async def test_full_queue_is_backend_busy(make_backend: Callable[..., LlamaCppBackend]) -> None:
    no_queue = make_backend(queue_size=0)
    stream = no_queue.stream(ask("smollm2-135m", "Count from one to forty in words.", 48))
    await anext(stream)
    try:
        with pytest.raises(BackendBusy) as info:
            await no_queue.generate(ask("smollm2-135m", "hi", 4))
        assert info.value.retry_after == 3
        # Another model has its own gate.
        other = await no_queue.generate(ask("gemma3-270m", "hi", 4))
        assert other.usage.completion_tokens > 0
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert not no_queue.gate("smollm2-135m").busy


async def test_waiting_generation_runs_after_the_current_one(backend: LlamaCppBackend) -> None:
    gate = backend.gate("smollm2-135m")
    first = asyncio.create_task(backend.generate(ask("smollm2-135m", "Say hi.", 8)))
    await asyncio.sleep(0)  # the first takes the free model at once
    assert gate.busy
    second = asyncio.create_task(backend.generate(ask("smollm2-135m", "Say bye.", 8)))
    await asyncio.sleep(0)
    assert gate.waiting == 1
    results = await asyncio.gather(first, second)
    assert all(r.content for r in results)
    assert not gate.busy
    assert gate.waiting == 0


async def test_generation_past_its_time_limit_stops(
    make_backend: Callable[..., LlamaCppBackend],
) -> None:
    hurried = make_backend(timeout_s=1e-6)
    result = await hurried.generate(ask("smollm2-135m", "Count from one to forty.", 32))
    assert result.finish_reason == "timeout"
    assert result.usage.completion_tokens <= 1


async def test_messages_longer_than_the_context_are_invalid_input(
    backend: LlamaCppBackend,
) -> None:
    too_long = " ".join(["word"] * (CONTEXT * 2))
    with pytest.raises(InvalidInput) as info:
        await backend.generate(ask("smollm2-135m", too_long, 4))
    assert info.value.field == "messages"
    assert "word" not in info.value.message  # the prompt text is never echoed
    assert not backend.gate("smollm2-135m").busy


def reference_prompt_tokens(models_dir: Path, model: str, text: str) -> int:
    """Prompt tokens as llama-cpp-python's own non-streaming completion counts them."""
    local = next(m for m in local_models(models_dir) if m.name == model)
    instance = LlamaInstance(local, threads=THREADS, context=CONTEXT, role="interactive")
    try:
        reply = instance.llama.create_chat_completion(
            messages=[{"role": "user", "content": text}], max_tokens=1, temperature=0.0
        )
    finally:
        instance.close()
    return int(reply["usage"]["prompt_tokens"])


async def test_prompt_tokens_match_llama_cpp_when_the_model_stops(
    backend: LlamaCppBackend, models_dir: Path
) -> None:
    text = "Say hello in one short sentence."
    result = await backend.generate(ask("smollm2-135m", text, 48))
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens == reference_prompt_tokens(models_dir, "smollm2-135m", text)


@pytest.mark.parametrize("model", MODEL_NAMES)
async def test_prompt_tokens_match_llama_cpp_when_cut_by_max_tokens(
    backend: LlamaCppBackend, models_dir: Path, model: str
) -> None:
    text = "Write a long story about a cat."
    result = await backend.generate(ask(model, text, 3))
    assert result.finish_reason == "length"
    assert result.usage.prompt_tokens == reference_prompt_tokens(models_dir, model, text)
