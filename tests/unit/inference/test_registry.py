"""The registry: embedded, TOML-declared and discovered models with tier, context and cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.errors import ModelNotFound, PolicyError
from appliance.gateway.routing import build_routing
from appliance.inference.balancer import BalancedBackend
from appliance.inference.bundled import BUNDLED
from appliance.inference.llamacpp import LlamaCppBackend, LocalModel
from appliance.inference.registry import Registry, build_pool, load_spec

TOML = """
[[backends]]
name = "gpu-pool"
kind = "openai_compat"
tier = "large"
cost_per_hour = 1.5
connect_timeout_s = 0.5
nodes = [{ url = "http://127.0.0.1:9/v1" }, { url = "http://127.0.0.1:10/v1", max_concurrency = 2 }]
models = [{ name = "big-8b", served_as = "meta/llama-8b", context_length = 8192 }]

[[backends]]
name = "frontier"
kind = "openai_compat"
tier = "external"
api_key_env = "FRONTIER_KEY"
nodes = [{ url = "http://127.0.0.1:11/v1" }]
models = [{ name = "gpt-4o", context_length = 128000 }]

[[backends]]
name = "box"
kind = "ollama"
nodes = [{ url = "http://127.0.0.1:11434" }]
models = [{ name = "llama3.2:3b", capabilities = ["tools"] }]
"""


def embedded(models_dir: Path) -> LlamaCppBackend:
    return LlamaCppBackend(
        [LocalModel(m.name, models_dir / m.filename, m.chat_format) for m in BUNDLED],
        threads=1, context=2048, queue_size=1, retry_after=1, timeout_s=10,
    )  # fmt: skip


def test_spec_file_builds_pools_with_tiers_contexts_and_costs(tmp_path: Path) -> None:
    path = tmp_path / "inference.toml"
    path.write_text(TOML)
    spec = load_spec(path)
    pool, models = build_pool(spec.backends[0])

    assert isinstance(pool, BalancedBackend)
    assert [n.name for n in pool.nodes] == ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
    assert [n.max_concurrency for n in pool.nodes] == [4, 2]
    assert [(m.name, m.tier, m.context_length, m.cost_per_hour) for m in models] == [
        ("big-8b", "large", 8192, 1.5)
    ]


def test_bad_spec_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "inference.toml"
    path.write_text('[[backends]]\nname = "x"\nkind = "tgi"\nnodes = [{url = "http://h"}]\n')
    with pytest.raises(PolicyError) as info:
        load_spec(path)
    assert "backends.0.kind" in info.value.message


def test_registry_from_settings_knows_every_tier(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "inference.toml"
    path.write_text(TOML)
    settings = Settings(data_dir=tmp_path, models_dir=models_dir, inference_file=path)
    registry, _ = build_routing(settings, None, [embedded(models_dir)])

    assert registry.names() == ["big-8b", "gemma3-270m", "gpt-4o", "llama3.2:3b", "smollm2-135m"]
    assert [m.name for m in registry.by_tier("small")] == ["llama3.2:3b", "smollm2-135m"]
    assert [m.name for m in registry.by_tier("large")] == ["big-8b", "gemma3-270m"]
    assert [m.name for m in registry.by_tier("external")] == ["gpt-4o"]
    assert registry.resolve("smollm2-135m")[1].cost_per_hour == settings.embedded_cost_per_hour
    assert registry.next_tier("small", allow_external=False) == "large"
    assert registry.next_tier("large", allow_external=False) is None
    assert registry.next_tier("large", allow_external=True) == "external"
    assert registry.model_for_tier("small", prefer="smollm2-135m").name == "smollm2-135m"  # type: ignore[union-attr]


def test_tier_and_context_overrides(models_dir: Path) -> None:
    registry = Registry(
        [embedded(models_dir)],
        tiers={"gemma3-270m": "small", "smollm2-135m": "large"},
        context_limits={"smollm2-135m": 512},
    )
    assert registry.resolve("gemma3-270m")[1].tier == "small"
    info = registry.resolve("smollm2-135m")[1]
    assert (info.tier, info.context_length) == ("large", 512)


def test_unknown_model_lists_the_available_ones(models_dir: Path) -> None:
    registry = Registry([embedded(models_dir)])
    with pytest.raises(ModelNotFound) as info:
        registry.resolve("gpt-5")
    assert info.value.extra["available"] == ["gemma3-270m", "smollm2-135m"]


async def test_discovery_reports_unreachable_backends(tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "inference.toml"
    path.write_text(TOML)
    settings = Settings(data_dir=tmp_path, models_dir=models_dir, inference_file=path)
    registry, _ = build_routing(settings, None, [embedded(models_dir)])
    outcome = await registry.discover()
    # Nothing listens on those ports: discovery says so per node, the declared models stay.
    assert outcome["gpu-pool-0"].startswith("failed")
    assert outcome["box-0"].startswith("failed")
    assert "big-8b" in registry.names()
    for backend in registry.backends:
        close = getattr(backend, "aclose", None)
        if close is not None:
            await close()


def test_admin_managed_backends_come_from_the_database(tmp_path: Path, models_dir: Path) -> None:
    from sqlmodel import Session

    from appliance.costs.models import InferenceBackendRow
    from appliance.db.engine import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'appliance.db'}"
    upgrade(url)
    engine = make_engine(url)
    spec = {
        "tier": "large",
        "nodes": [{"url": "http://127.0.0.1:9/v1"}],
        "models": [{"name": "admin-model", "context_length": 4096}],
    }
    with Session(engine) as session:
        session.add(InferenceBackendRow(name="admin-pool", kind="openai_compat", spec=spec))
        session.add(
            InferenceBackendRow(name="off-pool", kind="openai_compat", spec=spec, enabled=False)
        )
        session.commit()
    settings = Settings(data_dir=tmp_path, models_dir=models_dir)
    registry, _ = build_routing(settings, engine, [embedded(models_dir)])
    backend, info = registry.resolve("admin-model")
    assert (backend.name, info.tier, info.context_length) == ("admin-pool", "large", 4096)
    assert "off-pool" not in [b.name for b in registry.backends]
    engine.dispose()


async def test_a_pool_without_declared_models_serves_what_discovery_finds_at_its_price(
    tmp_path: Path, models_dir: Path
) -> None:
    from tests.support.fake_ollama import FakeOllamaServer

    with FakeOllamaServer() as ollama:
        path = tmp_path / "inference.toml"
        path.write_text(
            f'[[backends]]\nname = "new-box"\nkind = "ollama"\ncost_per_hour = 2.5\n'
            f'nodes = [{{ url = "{ollama.url}" }}]\n'
        )
        settings = Settings(data_dir=tmp_path, models_dir=models_dir, inference_file=path)
        registry, _ = build_routing(settings, None, [embedded(models_dir)])
        # A backend before it serves anything (an admin can pull a model to it)...
        assert "new-box" in [b.name for b in registry.backends]
        assert "llama3.2:3b" not in registry.names()

        assert (await registry.discover())["new-box-0"] == "ok"

        # ...and what it turns out to serve is priced at the pool's rate, not the embedded one.
        backend, info = registry.resolve("llama3.2:3b")
        assert (backend.name, info.cost_per_hour) == ("new-box", 2.5)
        assert registry.resolve("smollm2-135m")[1].cost_per_hour == settings.embedded_cost_per_hour
        for each in registry.backends:
            close = getattr(each, "aclose", None)
            if close is not None:
                await close()
