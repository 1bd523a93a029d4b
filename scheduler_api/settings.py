"""The service's settings: one pydantic-settings class read from the environment and `.env`.

Nothing here runs at import. `load_settings()` builds a `Settings` when a process starts
(`cli`, `main`) and turns pydantic's validation error into a `SettingsError` whose message
names every bad variable, so a typo fails the start-up instead of a request later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler_api.errors import SettingsError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class Settings(BaseSettings):
    """Every knob of the service. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    port: int = Field(3000, ge=1, le=65535, description="HTTP port of `scheduler-api serve`.")
    host: str = Field("0.0.0.0", description="Interface the API binds to.")
    app_env: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    redis_url: str = DEFAULT_REDIS_URL
    # Seconds the API waits for Redis before answering 503 (connect and each command).
    redis_timeout_seconds: float = Field(2.0, gt=0)
    queue_name: str = Field("scheduler-api", min_length=1)

    delivery_timeout_seconds: float = Field(30.0, gt=0)
    # Retries after the first attempt: 3 means at most 4 attempts in all.
    delivery_max_retries: int = Field(3, ge=0, le=20)
    # Base of the exponential backoff: retry n waits about base * 2**(n-1) seconds, jittered.
    delivery_backoff_seconds: float = Field(1.0, ge=0)
    worker_concurrency: int = Field(10, ge=1, le=10_000)
    # A worker that stops renewing its lease for this long is presumed dead; its unfinished
    # firings are handed to another worker.
    worker_lease_seconds: float = Field(30.0, gt=0)

    scheduler_interval_seconds: float = Field(1.0, gt=0, le=60)
    # A firing due while no scheduler ran is still fired if it is at most this late.
    misfire_grace_seconds: float = Field(60.0, ge=0)
    # Firings per RQ job: one job carries up to this many firings, delivered concurrently.
    scheduler_batch_size: int = Field(200, ge=1, le=10_000)

    completed_keep_seconds: int = Field(86_400, ge=0)
    completed_keep_count: int = Field(100, ge=0)
    failed_keep_count: int = Field(1000, ge=0)

    max_triggers_per_workspace: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {value!r}")
        return value


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment (and `.env`), with `overrides` on top.

    Raises `SettingsError` naming each invalid variable, e.g. ``PORT: Input should be a valid integer``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from e
