"""A real OpenAI-compatible server (llama-cpp-python's) with the small bundled model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.llama_server import LlamaServer
from tests.support.process import free_port

SMALL = "smollm2-135m"


@pytest.fixture(scope="session")
def llama_server(models_dir: Path) -> Iterator[LlamaServer]:
    """One server for the session, serving SmolLM2 as `smollm2-135m`."""
    with LlamaServer(models_dir / "SmolLM2-135M-Instruct.Q4_1.gguf", alias=SMALL) as server:
        yield server


@pytest.fixture
def dead_url() -> str:
    """An OpenAI-compatible base URL on a closed loopback port: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/v1"
