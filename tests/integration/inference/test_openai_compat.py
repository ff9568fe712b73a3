"""The OpenAI-compatible backend against a real llama-cpp-python server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from appliance.errors import BackendUnavailable, ModelNotFound
from appliance.inference.base import Backend, GenerationRequest, Message
from appliance.inference.openai_compat import OpenAICompatBackend
from tests.integration.inference.conftest import SMALL
from tests.support.llama_server import LlamaServer


def request(**kwargs: object) -> GenerationRequest:
    values: dict[str, object] = {
        "model": SMALL,
        "messages": [Message("user", "Name one colour.")],
        "max_tokens": 8,
    }
    values.update(kwargs)
    return GenerationRequest(**values)  # type: ignore[arg-type]


_open: list[OpenAICompatBackend] = []


def compat(server: LlamaServer, **kwargs: object) -> OpenAICompatBackend:
    backend = OpenAICompatBackend(base_url=server.base_url, **kwargs)  # type: ignore[arg-type]
    _open.append(backend)
    return backend


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _open:
        await _open.pop().aclose()


def test_is_a_backend(llama_server: LlamaServer) -> None:
    assert isinstance(compat(llama_server), Backend)


async def test_discovery_lists_the_served_model(llama_server: LlamaServer) -> None:
    backend = compat(llama_server, tier="small")
    models = await backend.discover()
    assert [m.name for m in models] == [SMALL]
    assert models[0].tier == "small"
    assert (await backend.health()).ok


async def test_generate_returns_text_and_token_counts(llama_server: LlamaServer) -> None:
    result = await compat(llama_server).generate(request())
    assert result.content.strip()
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 8
    assert result.finish_reason in {"stop", "length"}


async def test_stream_yields_deltas_then_usage(llama_server: LlamaServer) -> None:
    deltas = [d async for d in compat(llama_server).stream(request())]
    text = "".join(d.content for d in deltas)
    assert text.strip()
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.completion_tokens >= 1
    assert deltas[-1].usage.ttft_s <= deltas[-1].usage.total_s


async def test_json_schema_constrains_the_output(llama_server: LlamaServer) -> None:
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
    }
    backend = compat(llama_server, structured_output="json_object")
    result = await backend.generate(request(json_schema=schema, max_tokens=24))
    assert json.loads(result.content)["colour"] in {"red", "green", "blue"}


async def test_alias_maps_a_routing_name_to_the_served_name(llama_server: LlamaServer) -> None:
    backend = compat(llama_server, model_aliases={"house-small": SMALL})
    assert "house-small" in [m.name for m in backend.models()]
    result = await backend.generate(request(model="house-small"))
    assert result.content.strip()


async def test_refused_connection_is_backend_unavailable(dead_url: str) -> None:
    backend = OpenAICompatBackend(base_url=dead_url, connect_timeout_s=0.5)
    _open.append(backend)
    with pytest.raises(BackendUnavailable):
        await backend.generate(request())
    with pytest.raises(BackendUnavailable):
        async for _ in backend.stream(request()):
            pass
    assert not (await backend.health()).ok


async def test_unknown_path_is_mapped_not_leaked(llama_server: LlamaServer) -> None:
    # The server has no /v1/v1 routes: a 404 from the server becomes ModelNotFound.
    backend = OpenAICompatBackend(base_url=llama_server.base_url + "/v1")
    _open.append(backend)
    with pytest.raises(ModelNotFound):
        await backend.generate(request())
