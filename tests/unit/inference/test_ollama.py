"""The Ollama backend over the official client, against FakeOllamaTransport (Ollama's wire format).

The Ollama binary cannot run here; the fake replays docs/api.md's NDJSON and error bodies.
"""

from __future__ import annotations

import httpx
import pytest

from appliance.errors import (
    BackendBusy,
    BackendTimeout,
    BackendUnavailable,
    InferenceError,
    InvalidInput,
    ModelNotFound,
)
from appliance.inference.base import Backend, GenerationRequest, Message
from appliance.inference.ollama import OllamaBackend
from tests.support.fake_ollama import FakeOllamaTransport

MODEL = "llama3.2:3b"


def backend(fake: FakeOllamaTransport, **kwargs: object) -> OllamaBackend:
    return OllamaBackend(host="http://127.0.0.1:11434", transport=fake.transport(), **kwargs)  # type: ignore[arg-type]


def request(**kwargs: object) -> GenerationRequest:
    values: dict[str, object] = {
        "model": MODEL,
        "messages": [Message("system", "Be brief."), Message("user", "Say hello.")],
        "max_tokens": 16,
    }
    values.update(kwargs)
    return GenerationRequest(**values)  # type: ignore[arg-type]


def test_is_a_backend() -> None:
    assert isinstance(backend(FakeOllamaTransport()), Backend)


async def test_chat_sends_options_and_reads_counts_and_nanosecond_durations() -> None:
    fake = FakeOllamaTransport(reply=["Hi", "!"], done_reason="length")
    result = await backend(fake).generate(request())

    assert result.content == "Hi!"
    assert result.finish_reason == "length"
    assert result.usage.prompt_tokens == 26
    assert result.usage.completion_tokens == 2
    assert result.usage.total_s == pytest.approx(1.25)
    # Without a stream, time to first token is load + prompt evaluation.
    assert result.usage.ttft_s == pytest.approx(0.25)
    path, body = fake.requests[-1]
    assert path == "/api/chat"
    assert body["stream"] is False
    assert body["options"] == {"num_predict": 16, "temperature": 0.0}
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "format" not in body


async def test_structured_output_sends_the_json_schema_as_format() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fake = FakeOllamaTransport(reply=['{"name": "Ada"}'])
    result = await backend(fake).generate(request(json_schema=schema))

    assert result.content == '{"name": "Ada"}'
    assert fake.requests[-1][1]["format"] == schema


async def test_streaming_yields_each_chunk_then_usage_from_the_done_object() -> None:
    fake = FakeOllamaTransport(reply=["One", " two", " three"])
    deltas = [d async for d in backend(fake).stream(request())]

    assert [d.content for d in deltas[:-1]] == ["One", " two", " three"]
    last = deltas[-1]
    assert last.content == ""
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert last.usage.total_s == pytest.approx(1.25)
    assert fake.requests[-1][1]["stream"] is True


async def test_error_line_in_the_middle_of_a_stream_is_an_inference_error() -> None:
    fake = FakeOllamaTransport(reply=["a", "b", "c"], stream_error_after=1)
    received: list[str] = []
    with pytest.raises(InferenceError) as info:
        async for delta in backend(fake).stream(request()):
            received.append(delta.content)
    assert received == ["a"]
    assert "error was encountered" in info.value.message


async def test_generate_endpoint_for_raw_prompts() -> None:
    fake = FakeOllamaTransport(reply=["42"])
    result = await backend(fake).generate_text(request(), "What is six times seven?")

    assert result.content == "42"
    path, body = fake.requests[-1]
    assert path == "/api/generate"
    assert body["prompt"] == "What is six times seven?"


async def test_discovery_reads_tags_and_show_for_context_and_capabilities() -> None:
    fake = FakeOllamaTransport(context_length=8192)
    ollama = backend(fake, tier="large")
    assert ollama.models() == []

    models = await ollama.discover()

    assert [m.name for m in models] == [MODEL]
    info = models[0]
    assert info.context_length == 8192
    assert info.tier == "large"
    assert info.capabilities == ("completion", "tools")
    assert info.details["quantization_level"] == "Q4_K_M"
    assert [p for p, _ in fake.requests] == ["/api/tags", "/api/show"]


async def test_running_models_from_ps() -> None:
    running = await backend(FakeOllamaTransport()).running()
    assert [(r.name, r.size_vram) for r in running] == [(MODEL, 2019393189)]
    assert running[0].expires_at is not None


async def test_pull_reports_progress_until_success() -> None:
    progress = [p async for p in backend(FakeOllamaTransport()).pull(MODEL)]

    assert progress[0].status == "pulling manifest"
    downloads = [p for p in progress if p.total]
    first = [p for p in downloads if p.digest == downloads[0].digest]
    # Until bytes arrive a layer has no `completed`; its last line reports it whole.
    assert first[0].completed is None and first[0].status == f"downloading {first[0].digest}"
    assert [p.completed for p in first[1:]] == sorted(p.completed or 0 for p in first[1:])
    assert first[-1].completed == first[-1].total
    assert progress[-1].status == "success"


async def test_embeddings() -> None:
    vectors = await backend(FakeOllamaTransport()).embed("all-minilm", ["a", "b"])
    assert len(vectors) == 2
    assert vectors[1][0] == pytest.approx(0.02)


async def test_health_ok_and_down() -> None:
    assert (await backend(FakeOllamaTransport()).health()).ok
    down = FakeOllamaTransport(
        raise_on={"/api/tags": lambda r: httpx.ConnectError("refused", request=r)}
    )
    health = await backend(down).health()
    assert not health.ok


@pytest.mark.parametrize(
    ("status", "message", "error"),
    [
        (404, "model 'nope' not found, try pulling it first", ModelNotFound),
        (400, "invalid options", InvalidInput),
        # OLLAMA_MAX_QUEUE exceeded (server/sched.go ErrMaxQueue): up, but full.
        (503, "server busy, please try again.  maximum pending requests exceeded", BackendBusy),
        (503, "service unavailable", BackendUnavailable),
        (500, "llama runner process has terminated", InferenceError),
    ],
)
async def test_error_bodies_map_into_the_error_tree(
    status: int, message: str, error: type[Exception]
) -> None:
    fake = FakeOllamaTransport(errors={"/api/chat": (status, message)})
    with pytest.raises(error) as info:
        await backend(fake).generate(request())
    assert message in str(info.value)
    assert type(info.value) is error


async def test_refused_connection_is_backend_unavailable() -> None:
    fake = FakeOllamaTransport(
        raise_on={"/api/chat": lambda r: httpx.ConnectError("refused", request=r)}
    )
    with pytest.raises(BackendUnavailable):
        await backend(fake).generate(request())


async def test_read_timeout_is_backend_timeout() -> None:
    fake = FakeOllamaTransport(
        raise_on={"/api/chat": lambda r: httpx.ReadTimeout("slow", request=r)}
    )
    with pytest.raises(BackendTimeout):
        await backend(fake).generate(request())
    with pytest.raises(BackendTimeout):
        async for _ in backend(fake).stream(request()):
            pass


async def test_connect_timeout_is_backend_unavailable_so_the_balancer_moves_on() -> None:
    fake = FakeOllamaTransport(
        raise_on={"/api/chat": lambda r: httpx.ConnectTimeout("no route", request=r)}
    )
    with pytest.raises(BackendUnavailable):
        await backend(fake).generate(request())
