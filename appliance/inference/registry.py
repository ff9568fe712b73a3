"""Which backend serves which model name."""

from __future__ import annotations

from appliance.errors import ModelNotFound
from appliance.inference.base import Backend, ModelInfo


class Registry:
    """Model names mapped to the backend that serves them."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self._by_model: dict[str, tuple[Backend, ModelInfo]] = {}
        for backend in backends:
            for info in backend.models():
                self._by_model.setdefault(info.name, (backend, info))

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self._by_model)

    def models(self) -> list[ModelInfo]:
        """Every model, sorted by name."""
        return [self._by_model[name][1] for name in self.names()]

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
