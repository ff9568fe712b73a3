"""Which backend serves which model name, at which tier, and at what cost.

Models come from three places: the embedded engine's bundled models, backends declared in the
inference TOML file (`inference_file`) or by an admin in the database (`inference_backends`
table), and discovery from each backend's own model list (`/api/tags`, `/v1/models`). Each
declared backend is a pool of one or more nodes behind the balancer.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.errors import ModelNotFound, PolicyError
from appliance.inference.balancer import BalancedBackend, CircuitBreaker, Node
from appliance.inference.base import TIERS, Backend, Health, ModelInfo, Tier


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(_Strict):
    """One server of a backend pool."""

    url: str = Field(min_length=1, description="Base URL: `http://host:11434` or `.../v1`.")
    max_concurrency: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Requests the node runs at once for all app replicas together (its slots); "
        "each replica admits ceil(max_concurrency / app_replicas).",
    )
    cost_per_hour: float | None = Field(default=None, ge=0)


class ModelSpec(_Strict):
    """A model a backend serves, as the router should see it."""

    name: str = Field(min_length=1, max_length=200)
    served_as: str | None = None
    tier: Tier | None = None
    context_length: int | None = Field(default=None, gt=0)
    capabilities: list[str] = Field(default_factory=list)


class BackendSpec(_Strict):
    """A backend pool: its kind, tier, nodes, models and resilience knobs."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: Literal["ollama", "openai_compat"]
    tier: Tier = "small"
    nodes: list[NodeSpec] = Field(min_length=1)
    models: list[ModelSpec] = Field(default_factory=list)
    api_key_env: str | None = None
    structured_output: Literal["json_schema", "json_object"] = "json_schema"
    cost_per_hour: float = Field(default=0.0, ge=0)
    context_length: int = Field(default=2048, gt=0)
    connect_timeout_s: float = Field(default=1.0, gt=0)
    first_token_timeout_s: float = Field(default=30.0, gt=0)
    total_timeout_s: float = Field(default=300.0, gt=0)
    failure_threshold: int = Field(default=3, ge=1)
    reset_after_s: float = Field(default=30.0, gt=0)
    queue_size: int = Field(
        default=8,
        ge=0,
        description="Requests a replica lets wait while every node is at its share; one more "
        "gets 503 `backend_busy`.",
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest a request waits in that queue before the 503."
    )


class InferenceSpec(_Strict):
    """The inference TOML file: `[[backends]]` tables."""

    backends: list[BackendSpec] = Field(default_factory=list)


def load_spec(path: Path) -> InferenceSpec:
    """Read and validate the inference TOML file; a bad file stops start-up naming the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return InferenceSpec.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"{path}: {where}: {first['msg']}", field=where) from exc


def build_pool(
    spec: BackendSpec, *, replicas: int = 1, retry_after_s: int = 5
) -> tuple[BalancedBackend, list[ModelInfo]]:
    """The balanced backend of a spec, and the models it declares; `replicas` app processes
    share its nodes' slots."""
    nodes: list[Node] = []
    aliases = {m.name: m.served_as or m.name for m in spec.models}
    for index, node in enumerate(spec.nodes):
        backend: Backend
        if spec.kind == "ollama":
            # Deferred: the Ollama client loads only on a box that configures an Ollama pool.
            from appliance.inference.ollama import OllamaBackend

            backend = OllamaBackend(
                host=node.url,
                name=f"{spec.name}-{index}",
                connect_timeout_s=spec.connect_timeout_s,
                timeout_s=spec.total_timeout_s,
                tier=spec.tier,
                default_context=spec.context_length,
            )
        else:
            # Deferred: the OpenAI client loads only on a box that configures such a pool.
            from appliance.inference.openai_compat import OpenAICompatBackend

            backend = OpenAICompatBackend(
                base_url=node.url,
                name=f"{spec.name}-{index}",
                api_key_env=spec.api_key_env,
                connect_timeout_s=spec.connect_timeout_s,
                timeout_s=spec.total_timeout_s,
                tier=spec.tier,
                default_context=spec.context_length,
                model_aliases=aliases,
                structured_output=spec.structured_output,
            )
        nodes.append(
            Node(
                node.url,
                backend,
                max_concurrency=node.max_concurrency,
                breaker=CircuitBreaker(
                    failure_threshold=spec.failure_threshold, reset_after_s=spec.reset_after_s
                ),
                replicas=replicas,
            )
        )
    costs = [n.cost_per_hour for n in spec.nodes if n.cost_per_hour is not None]
    cost = sum(costs) / len(costs) if costs else spec.cost_per_hour
    pool = BalancedBackend(
        spec.name,
        nodes,
        first_token_timeout_s=spec.first_token_timeout_s,
        total_timeout_s=spec.total_timeout_s,
        cost_per_hour=cost,
        queue_size=spec.queue_size,
        queue_timeout_s=spec.queue_timeout_s,
        retry_after_s=retry_after_s,
    )
    declared = [
        ModelInfo(
            name=m.name,
            backend=spec.name,
            context_length=m.context_length or spec.context_length,
            details={"kind": spec.kind, "nodes": len(spec.nodes)},
            tier=m.tier or spec.tier,
            capabilities=tuple(m.capabilities),
            cost_per_hour=cost,
        )
        for m in spec.models
    ]
    return pool, declared


class Registry:
    """Model names mapped to the backend that serves them, with tier and cost."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        declared: list[tuple[Backend, ModelInfo]] | None = None,
        tiers: dict[str, Tier] | None = None,
        cost_per_hour: float = 0.0,
        context_limits: dict[str, int] | None = None,
    ) -> None:
        self.backends = list(backends)
        self._declared = list(declared or [])
        for backend, _ in self._declared:
            if backend not in self.backends:
                self.backends.append(backend)
        self._tiers = dict(tiers or {})
        self._cost_per_hour = cost_per_hour
        self._context_limits = dict(context_limits or {})
        self._by_model: dict[str, tuple[Backend, ModelInfo]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        found: dict[str, tuple[Backend, ModelInfo]] = {}
        for backend, info in self._declared:
            found.setdefault(info.name, (backend, info))
        for backend in self.backends:
            for info in backend.models():
                if info.name in found:
                    continue
                if info.cost_per_hour == 0.0:
                    # A pool's own price, else the embedded engine's.
                    own = getattr(backend, "cost_per_hour", None)
                    cost = own or self._cost_per_hour
                    if cost:
                        info = replace(info, cost_per_hour=cost)
                found[info.name] = (backend, info)
        for name, tier in self._tiers.items():
            if name in found:
                backend, info = found[name]
                found[name] = (backend, replace(info, tier=tier))
        for name, limit in self._context_limits.items():
            if name in found:
                backend, info = found[name]
                found[name] = (backend, replace(info, context_length=limit))
        self._by_model = found

    async def discover(self) -> dict[str, str]:
        """Ask every backend that can list its models; returns per-backend `ok` or the error."""
        outcome: dict[str, str] = {}
        for backend in self.backends:
            targets: list[Any] = [backend]
            if isinstance(backend, BalancedBackend):
                targets = [node.backend for node in backend.nodes]
            for target in targets:
                discover = getattr(target, "discover", None)
                if discover is None:
                    continue
                try:
                    await discover()
                    outcome[target.name] = "ok"
                except Exception as exc:
                    outcome[target.name] = f"failed: {type(exc).__name__}"
        self._rebuild()
        return outcome

    def start(self) -> None:
        """Start backends that run processes of their own (the embedded engine's workers)."""
        for backend in self.backends:
            start = getattr(backend, "start", None)
            if start is not None:
                start()

    async def aclose(self) -> None:
        """Close the connection pools of backends that hold one (at shutdown)."""
        for backend in self.backends:
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    async def health(self) -> dict[str, Health]:
        """Each backend's health, by backend name."""
        return {backend.name: await backend.health() for backend in self.backends}

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self._by_model)

    def models(self) -> list[ModelInfo]:
        """Every model, sorted by name."""
        return [self._by_model[name][1] for name in self.names()]

    def by_tier(self, tier: Tier) -> list[ModelInfo]:
        """Models of one tier, in name order."""
        return [m for m in self.models() if m.tier == tier]

    def model_for_tier(self, tier: Tier, *, prefer: str | None = None) -> ModelInfo | None:
        """The model that serves `tier`: `prefer` if it is of that tier, else the first one."""
        candidates = self.by_tier(tier)
        for model in candidates:
            if model.name == prefer:
                return model
        return candidates[0] if candidates else None

    def next_tier(self, tier: Tier, *, allow_external: bool) -> Tier | None:
        """The next tier up that has a model (external only when allowed)."""
        index = TIERS.index(tier)
        for candidate in TIERS[index + 1 :]:
            if candidate == "external" and not allow_external:
                return None
            if self.by_tier(candidate):
                return candidate
        return None

    def resolve(self, name: str) -> tuple[Backend, ModelInfo]:
        """The backend and model info for `name`; unknown names list the available ones."""
        try:
            return self._by_model[name]
        except KeyError:
            raise ModelNotFound(
                f"model '{name}' does not exist; available: {', '.join(self.names()) or 'none'}",
                field="model",
                available=self.names(),
            ) from None
