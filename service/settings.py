"""Service configuration: one pydantic-settings class, read from `FT_*` environment variables."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that people paste from examples; refused as a bootstrap key outside development.
_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "password", "sk-...", "test", "admin"}


ProviderKind = Literal["openai", "azure", "nebius", "peer"]


class ProviderModel(BaseModel):
    """A model a provider fine-tunes, with what the service cannot know by itself."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    methods: list[Literal["supervised", "dpo", "reinforcement"]] | None = None
    shutdown_date: date | None = None
    # From this day the provider refuses to create jobs on it (OpenAI: 2027-01-06).
    training_cutoff: date | None = None


class ProviderSettings(BaseModel):
    """One upstream provider of `FT_PROVIDERS`: an OpenAI-compatible fine-tuning API."""

    model_config = ConfigDict(extra="forbid")

    # At most 20 characters: it is stored as the engine of the provider's jobs.
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,19}$")
    base_url: AnyHttpUrl
    api_key: SecretStr
    models: list[str | ProviderModel] = Field(min_length=1)
    webhook_secret: SecretStr | None = None
    kind: ProviderKind = "openai"

    @field_validator("name")
    @classmethod
    def _not_local(cls, value: str) -> str:
        if value == "local":
            raise ValueError("'local' is the local engine's name; choose another provider name")
        return value

    def model_entries(self) -> list[ProviderModel]:
        """The provider's models, each as a ProviderModel."""
        return [m if isinstance(m, ProviderModel) else ProviderModel(id=m) for m in self.models]


class Settings(BaseSettings):
    """Everything the service reads from its environment, with embedded defaults."""

    model_config = SettingsConfigDict(env_prefix="FT_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("./data")
    database_url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty means a SQLite file in the data folder.",
    )
    bootstrap_api_key: SecretStr | None = None
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(default=1024 * 1024, gt=0)
    upload_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    organization: str = Field(default="personal", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    janitor_interval_seconds: float = Field(default=3600.0, gt=0)
    models_dir: Path | None = Field(
        default=None, description="Folder of local base models; default <data dir>/models."
    )
    dashboard_dir: Path | None = Field(
        default=None,
        description="The built dashboard served at /; default the one built into the package.",
    )
    local_models: dict[str, Path] = Field(
        default_factory=dict, description="More local base models: JSON object name -> folder."
    )
    packaged_models: bool = Field(
        default=True,
        description="At `serve`/`worker` start-up, convert installed packaged models (once).",
    )
    # `serve` runs the engines' workers and the studio's watcher itself (off: other processes do).
    embedded_worker: bool = True
    worker_lease_seconds: float = Field(default=60.0, gt=1)
    worker_poll_seconds: float = Field(default=2.0, gt=0)
    worker_heartbeat_seconds: float = Field(default=5.0, gt=0)
    training_optimizations: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: bf16, padding-free batches and attention per device (engines/local/"
        "device.py); off: plain TRL training in float32 with padded batches.",
    )
    sql_echo: bool = False
    event_poll_seconds: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="How often the poller looks for new events when nothing wakes it.",
    )
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0)
    stream_queue_size: int = Field(
        default=1000, ge=1, description="Messages a stream subscriber may fall behind by."
    )
    stream_ticket_seconds: float = Field(default=60.0, gt=0, le=3600)
    providers: list[ProviderSettings] = Field(
        default_factory=list,
        description="Upstream providers, JSON: [{name, base_url, api_key, models, ...}].",
    )
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    upstream_max_retries: int = Field(default=4, ge=0, le=10)
    # How long a replica may hold an upstream job without renewing (it renews while it syncs).
    upstream_lease_seconds: float = Field(default=30.0, gt=0)
    # How often an upstream job is synced, by status; a webhook syncs it at once.
    upstream_sync_running_seconds: float = Field(default=5.0, gt=0)
    upstream_sync_queued_seconds: float = Field(default=30.0, gt=0)
    upstream_sync_paused_seconds: float = Field(default=120.0, gt=0)
    studio_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the studio moves its training runs (feedback also wakes it).",
    )

    # Outbound webhooks: only to public addresses unless the operator allows private ones.
    webhooks_allow_private: bool = Field(
        default=False,
        description="Let webhook endpoints point at loopback, private or link-local addresses.",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    # After the n-th failed attempt a delivery waits base x 4^(n-1) seconds (at most 8 h),
    # until the window has passed since the event.
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_retry_window_seconds: float = Field(default=72 * 3600.0, gt=0)
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often due deliveries are looked for (a job's end in this process wakes "
        "the sender at once).",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("providers")
    @classmethod
    def _unique_providers(cls, value: list[ProviderSettings]) -> list[ProviderSettings]:
        names = [p.name for p in value]
        if len(names) != len(set(names)):
            raise ValueError("provider names must be unique")
        return value

    @model_validator(mode="after")
    def _defaults_and_safety(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'service.db'}"
        key = self.bootstrap_api_key.get_secret_value() if self.bootstrap_api_key else None
        if (
            key is not None
            and self.environment == "production"
            and (key.lower() in _PLACEHOLDER_KEYS or len(key) < 20)
        ):
            raise ValueError(
                "FT_BOOTSTRAP_API_KEY looks like a placeholder; use at least 20 random characters"
            )
        return self

    @property
    def base_models_dir(self) -> Path:
        """Folder whose sub-folders are local base models."""
        return self.models_dir or self.data_dir / "models"

    @property
    def jobs_dir(self) -> Path:
        """Folder holding each local job's checkpoints and final adapter."""
        return self.data_dir / "jobs"

    @property
    def files_dir(self) -> Path:
        """Folder holding uploaded and generated file contents."""
        return self.data_dir / "files"

    @property
    def organization_id(self) -> str:
        """The `organization_id` reported on jobs."""
        return f"org-{self.organization}"

    @property
    def is_sqlite(self) -> bool:
        """Whether the configured database is SQLite."""
        return self.database_url.startswith("sqlite")
