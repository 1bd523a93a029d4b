"""The service's settings: one pydantic-settings class read from the environment and `.env`.

Nothing here runs at import. `load_settings()` builds a `Settings` when a process starts
(`cli`, `main`) and turns pydantic's validation error into a `SettingsError` whose message
names every bad variable, so a typo fails the start-up instead of a request later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler_api.errors import SettingsError

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
HISTORY_ROOM_FOR_RETRYING = 900  # records of firings still retrying, beyond the two keep counts


class Settings(BaseSettings):
    """Every knob of the service. Names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # A ValidationError's text (a traceback, e.g. `uvicorn scheduler_api.main:app`) would
        # otherwise quote API_KEYS / SECRETS_KEY; `load_settings` shows the non-secret ones itself.
        hide_input_in_errors=True,
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
    # The longest backoff between two retries (a trigger's retry.max_backoff_seconds by default).
    delivery_max_backoff_seconds: float = Field(3600.0, gt=0)
    # The highest timeout_seconds a trigger may set.
    max_delivery_timeout_seconds: float = Field(300.0, ge=1)
    # A 429 or 503 answer's Retry-After is honoured up to this many seconds.
    retry_after_max_seconds: float = Field(3600.0, ge=0)
    # How much of a response body a trigger's success.body_contains is looked for in.
    success_body_max_bytes: int = Field(65_536, ge=1, le=16_777_216)
    # Requests one worker has in flight for one workspace (a single-workspace deployment: per worker).
    worker_concurrency: int = Field(10, ge=1, le=10_000)
    # Requests one worker has in flight for all workspaces together (scheduler_api.delivery.lanes);
    # unset: 2 x WORKER_CONCURRENCY.
    worker_max_in_flight: int | None = Field(None, ge=1, le=100_000)
    # A worker that stops renewing its lease for this long is presumed dead; its unfinished
    # firings are handed to another worker.
    worker_lease_seconds: float = Field(30.0, gt=0)

    scheduler_interval_seconds: float = Field(1.0, gt=0, le=60)
    # A firing due while no scheduler ran is still fired if it is at most this late.
    misfire_grace_seconds: float = Field(60.0, ge=0)
    # Firings per RQ job: one job carries up to this many firings, delivered concurrently.
    scheduler_batch_size: int = Field(500, ge=1, le=10_000)
    # An idle worker or scheduler parses the triggers due within this many seconds ahead of time
    # (scheduler_api.storage.prefetch); 0 turns it off.
    prefetch_seconds: float = Field(10.0, ge=0, le=300)
    # `scheduler-api worker` and `scheduler` serve GET /health on HOST:HEALTH_PORT (scheduler_api.health),
    # the liveness probe; 0 (the default): no server.
    health_port: int = Field(0, ge=0, le=65535)
    # /health answers 503 once a loop of the process has not gone round for this long: longer than a
    # scheduler's Redis command may wait (10 s) and rq's pause between reconnects (10 s).
    health_stale_seconds: float = Field(60.0, ge=10, le=3600)

    completed_keep_seconds: int = Field(86_400, ge=0)
    completed_keep_count: int = Field(100, ge=0)
    failed_keep_count: int = Field(1000, ge=0)
    # Records of any outcome (retrying ones included) kept per workspace: at least the two keep
    # counts above together, so that it never cuts into what they keep. Unset: their sum + 900
    # (2000 with the defaults); see `history_cap`.
    history_max_per_workspace: int | None = Field(None, ge=1)
    # How much of a target's response body a record keeps.
    response_excerpt_bytes: int = Field(256, ge=0, le=65_536)
    # After a workspace's signing secret is rotated, the previous one keeps signing for this long
    # (scheduler_api.signing: two signatures in webhook-signature), then stops.
    signing_rotation_seconds: int = Field(86_400, ge=0)

    max_triggers_per_workspace: int = Field(1000, ge=1)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_payload_bytes: int = Field(65_536, ge=2, description="Largest payload of one trigger, as JSON.")
    max_headers: int = Field(32, ge=0, description="Most headers one trigger may set.")
    max_header_bytes: int = Field(8192, ge=1, description="Longest name + value of one header.")
    max_url_length: int = Field(2048, ge=16, le=2048, description="Can only lower the 2048 ceiling.")
    # The HTTP edge of `serve` (scheduler_api.api.server): request line + headers, one header,
    # seconds to receive the head (from the connection or a keep-alive request's first byte) and
    # the body (from the end of the head), connections one process serves at once.
    max_request_head_bytes: int = Field(65_536, ge=1024, le=1_048_576)
    max_request_header_bytes: int = Field(8192, ge=256, le=1_048_576)
    request_header_timeout_seconds: float = Field(10.0, gt=0, le=600)
    request_body_timeout_seconds: float = Field(10.0, gt=0, le=600)
    max_connections: int = Field(1000, ge=1, le=100_000)
    # Bearer token of GET /metrics; unset: /metrics is open in development, off (403) in production.
    metrics_key: str | None = Field(None, repr=False)

    # Comma-separated `key`, `key:workspace` or `key:prefix-*` entries; see scheduler_api.auth.
    api_keys: str = Field("", repr=False)
    # Quotas (scheduler_api.api.quotas), counted in Redis so they hold across API replicas. Per key
    # scope ("*" for a key of every workspace, and for the open API without keys): workspaces with
    # triggers, and triggers in all. Per workspace: run-now calls and write calls per minute.
    max_workspaces_per_scope: int = Field(1000, ge=1)
    max_triggers_per_scope: int = Field(100_000, ge=1)
    run_now_per_minute: int = Field(60, ge=1)
    writes_per_minute: int = Field(600, ge=1)
    # The SSRF guard (scheduler_api.ssrf): private, loopback, link-local... targets are refused
    # unless this is true or they match TARGET_ALLOWLIST (host names or CIDRs, comma-separated).
    allow_private_targets: bool = False
    target_allowlist: str = ""
    # Fernet key(s) encrypting header values at rest; the first encrypts (scheduler_api.header_crypto).
    secrets_key: str | None = Field(None, repr=False)
    # The dashboard (/ui, scheduler_api.ui): how long a sign-in lasts, and the key its session cookies
    # are signed with (unset: derived from SECRETS_KEY, else random per process; scheduler_api.ui.session).
    ui_session_seconds: int = Field(28_800, ge=60, le=2_592_000)
    ui_secret: str | None = Field(None, repr=False, min_length=16)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        from scheduler_api.storage.connection import check_url

        check_url(value)  # the message never quotes the URL: it may hold a password
        return value

    @property
    def max_in_flight(self) -> int:
        """Requests one worker has in flight in all (`WORKER_MAX_IN_FLIGHT`, or 2 x WORKER_CONCURRENCY),
        never fewer than one workspace may have."""
        most = self.worker_max_in_flight or 2 * self.worker_concurrency
        return max(most, self.worker_concurrency)

    @property
    def history_cap(self) -> int:
        """Records of one workspace kept in all (`HISTORY_MAX_PER_WORKSPACE`, or its default)."""
        if self.history_max_per_workspace is not None:
            return self.history_max_per_workspace
        return self.completed_keep_count + self.failed_keep_count + HISTORY_ROOM_FOR_RETRYING

    @field_validator("history_max_per_workspace")
    @classmethod
    def _history_holds_the_keep_counts(cls, value: int | None, info: ValidationInfo) -> int | None:
        kept = info.data.get("completed_keep_count", 0) + info.data.get("failed_keep_count", 0)
        if value is not None and value < kept:
            raise ValueError(
                f"must be at least COMPLETED_KEEP_COUNT + FAILED_KEEP_COUNT ({kept}), "
                "or it would trim records those two keep"
            )
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: str) -> str:
        from scheduler_api.auth import parse_api_keys

        parse_api_keys(value)
        return value

    @field_validator("secrets_key")
    @classmethod
    def _secrets_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        from scheduler_api.header_crypto import HeaderCipher

        HeaderCipher(value)
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
            shown = _shown(name, err.get("input"))
            problems.append(f"{name}: {err['msg']} (got {shown})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from e


def _shown(name: str, value: Any) -> str:
    """How an invalid value appears in the error: secrets hidden, a Redis URL's password too."""
    if name in ("API_KEYS", "SECRETS_KEY", "METRICS_KEY", "UI_SECRET"):
        return "<hidden>"
    if name == "REDIS_URL" and isinstance(value, str):
        from scheduler_api.storage.connection import redacted

        return repr(redacted(value))
    return repr(value)
