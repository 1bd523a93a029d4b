"""Response models of the API (they also shape the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from scheduler_api.triggers import TRIGGER_ID, WORKSPACE_ID

State = Literal["active", "paused", "disabled", "ended"]


class Job(BaseModel):
    jobId: str = Field(description="`{workspace_id}:{id}`")
    jobName: str = Field(description="`{workspace_id}-trigger-{id}`")
    cron: str | None = Field(description="The cron expression; null for a one-off trigger (`at`).")
    at: str | None = Field(None, description="A one-off trigger's time, ISO 8601 UTC (only for one-offs).")
    url: str
    method: str
    id: str = Field(description="The trigger's id (its index in the list when none was given).")
    state: State = Field(
        description="ended (a one-off that fired, past end_at or max_firings), else disabled (enabled: false), "
        "else paused (workspace paused), else active."
    )


class RetryView(BaseModel):
    max_retries: int | None = None
    backoff_seconds: float | None = None
    max_backoff_seconds: float | None = None


class SuccessView(BaseModel):
    status: list[int | str] | None = None
    body_contains: str | None = None


class ListedJob(Job):
    next_run_at: str | None = Field(None, description="Next scheduled run, ISO 8601 UTC.")
    header_names: list[str] = Field(default_factory=list, description="Header names; values are never shown.")
    has_payload: bool = False
    timezone: str = "UTC"
    enabled: bool = True
    paused: bool = Field(False, description="True when the trigger is disabled or its workspace is paused.")
    # The delivery policy: only the fields the trigger sets are shown.
    timeout_seconds: float | None = None
    retry: RetryView | None = None
    final_statuses: list[int | str] | None = None
    success: SuccessView | None = None
    overlap: Literal["allow", "skip", "buffer_one"] | None = None
    start_at: str | None = Field(None, description="ISO 8601 UTC.")
    end_at: str | None = Field(None, description="ISO 8601 UTC.")
    max_firings: int | None = None
    jitter_seconds: int | None = Field(None, description="next_run_at and next_runs include each firing's offset.")
    disabled_reason: str | None = Field(None, description="An auto-disabled trigger: why (while it stays disabled).")
    disabled_at: str | None = Field(None, description="An auto-disabled trigger: when, ISO 8601 UTC.")


class Warning(BaseModel):
    path: str = Field(description='"triggers[2]", "trigger" or "triggers"')
    code: str = Field(description="dst_skipped, dst_repeated, overlap_risk, burst or rare")
    message: str


class ReplaceResponse(BaseModel):
    success: bool
    workspace_id: str
    removed: int
    added: int
    jobs: list[Job]
    warnings: list[Warning] | None = Field(None, description="Only when there are any.")


class ListResponse(BaseModel):
    success: bool
    workspace_id: str
    count: int
    jobs: list[ListedJob]


class DeleteResponse(BaseModel):
    success: bool
    workspace_id: str
    removed: int


class ErrorDetail(BaseModel):
    path: str
    message: str


class ErrorResponse(BaseModel):
    success: bool = False
    error: str
    details: list[ErrorDetail]


class HealthResponse(BaseModel):
    status: str
    timestamp: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid input; nothing was changed."},
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
    403: {"model": ErrorResponse, "description": "The API key does not serve this workspace."},
    413: {"model": ErrorResponse, "description": "Body too large."},
    503: {"model": ErrorResponse, "description": "Redis is unreachable."},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    412: {"model": ErrorResponse, "description": "If-Match names a stale ETag (or If-None-Match: * and it exists)."},
}


class TriggerDetail(ListedJob):
    payload: dict[str, Any] | None = Field(None, description="The JSON body (header values stay secret).")
    description: str = Field(description="The schedule in words.")
    next_runs: list[str] = Field(
        description="The next 5 send times (jitter included, within start_at / end_at), ISO 8601 UTC; none once ended."
    )


class PutResponse(BaseModel):
    success: bool
    workspace_id: str
    created: bool
    job: ListedJob
    warnings: list[Warning] | None = Field(None, description="Only when there are any.")


class Diff(BaseModel):
    added: list[str]
    removed: list[str]
    changed: list[dict[str, Any]] = Field(description='[{"id", "fields": ["url", "headers.Authorization"]}]')
    unchanged: list[str]


class DryRunResponse(BaseModel):
    success: bool
    dry_run: bool
    workspace_id: str
    diff: Diff
    jobs: list[ListedJob]
    warnings: list[Warning]


class TriggerResponse(BaseModel):
    success: bool
    workspace_id: str
    job: TriggerDetail


def _iso_text(value: Any) -> Any:
    """An instant is written as ISO 8601 text (pydantic alone also reads numbers as unix times)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time with an offset or Z, such as 2026-11-01T04:30:00Z")
    return value


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo (`timzone`) is refused, as in a trigger

    cron: str
    timezone: str | None = None
    after: Annotated[AwareDatetime, BeforeValidator(_iso_text)] | None = Field(
        None, description="Show the runs after this instant (ISO 8601 with an offset or Z); default now."
    )
    jitter_seconds: StrictInt = Field(0, ge=0, le=3600, description="The trigger's jitter_seconds.")
    workspace_id: StrictStr | None = Field(
        None, pattern=WORKSPACE_ID.pattern, description="With jitter: the workspace (offsets derive from firing ids)."
    )
    trigger_id: StrictStr | None = Field(
        None, pattern=TRIGGER_ID.pattern, min_length=1, max_length=64, description="With jitter: the trigger's id."
    )


class PreviewResponse(BaseModel):
    success: bool
    cron: str
    timezone: str
    description: str
    next_runs: list[str] = Field(description="Send times: the nominal run times plus the jitter offsets.")
    nominal_runs: list[str] | None = Field(None, description="With jitter_seconds > 0: the nominal run times.")


class PauseResponse(BaseModel):
    success: bool
    workspace_id: str
    paused: bool


class RunResponse(BaseModel):
    success: bool
    workspace_id: str
    jobId: str
    firing_id: str


class Attempt(BaseModel):
    attempt: int
    started_at: str
    duration_ms: float
    status: int | None = None
    error: str | None = None
    message: str | None = None
    body: str | None = None
    retry_after: float | None = Field(
        None,
        description="Only when a 429 or 503 carried Retry-After: the seconds the next attempt waited for (capped).",
    )
    waited_ms: float | None = Field(None, description="Only when a rate limit of the workspace held it back: how long.")
    queued_ms: float | None = Field(
        None,
        description="Only when it waited 1 s or more in the worker (behind its workspace's other requests): how long.",
    )


class AlertAbout(BaseModel):
    type: Literal["trigger.failing", "trigger.recovered", "trigger.disabled"]
    id: str = Field(description="The trigger the alert is about.")
    url: str = Field(description="Where the alert was sent (the workspace's alerts.url at the time).")


class Delivery(BaseModel):
    id: str = Field(description="The firing id, `{jobId}@{scheduled time}`; also its Idempotency-Key.")
    jobId: str
    workspace_id: str | None = None
    scheduled_at: str
    outcome: str = Field(description="delivered, failed, retrying, missed, blocked or skipped")
    attempts: list[Attempt] = Field(default_factory=list)
    finished_at: str | None = None
    next_attempt_at: str | None = Field(None, description="When a retrying firing is tried again.")
    late_seconds: float | None = Field(None, description="How late a missed firing was when a scheduler saw it.")
    missed_since: str | None = Field(None, description="The first run time a missed firing's scheduler passed over.")
    reason: str | None = Field(None, description='Why a skipped firing was not sent: "overlap".')
    active_id: str | None = Field(None, description="A skipped firing: the firing of its trigger that was active.")
    replays: int | None = Field(None, description="How many times the firing was replayed (absent: never).")
    trace_id: str | None = Field(
        None, description="The firing's W3C trace id, as its requests' traceparent carried it (absent: never sent)."
    )
    kind: Literal["alert"] | None = Field(None, description="\"alert\" for an alert's record; absent for a trigger's.")
    alert: AlertAbout | None = Field(None, description="An alert's record: what it was about and where it went.")


class DeliveriesResponse(BaseModel):
    success: bool
    workspace_id: str
    count: int
    deliveries: list[Delivery]


class PreviousSecret(BaseModel):
    expires_at: str = Field(description="When the previous secret stops signing, ISO 8601 UTC.")


class SigningSecretResponse(BaseModel):
    success: bool
    workspace_id: str
    secret: str = Field(description="`whsec_` + base64 of 32 random bytes; receivers verify deliveries with it.")
    created_at: str = Field(description="When this secret was made, ISO 8601 UTC.")
    previous: PreviousSecret | None = Field(
        description="After a rotation, until SIGNING_ROTATION_SECONDS have passed: the previous secret still signs "
        "every delivery too (a second signature in webhook-signature). Null otherwise."
    )


class ReplayResponse(BaseModel):
    success: bool
    firing_id: str
    replay: int = Field(description="The replay's number: 1 for the first replay of this firing.")


ReplayOutcome = Literal["delivered", "failed", "blocked", "missed", "skipped"]


class BulkReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo (`outcomes`) is refused, as in a trigger

    outcome: ReplayOutcome = Field("failed", description="Replay the records with this final outcome.")
    trigger: StrictStr | None = Field(
        None, pattern=TRIGGER_ID.pattern, min_length=1, max_length=64, description="Only this trigger id."
    )
    since: Annotated[AwareDatetime, BeforeValidator(_iso_text)] | None = Field(
        None, description="Only firings scheduled at or after this instant (ISO 8601 with an offset or Z)."
    )
    until: Annotated[AwareDatetime, BeforeValidator(_iso_text)] | None = Field(
        None, description="Only firings scheduled at or before this instant (ISO 8601 with an offset or Z)."
    )
    limit: StrictInt = Field(100, ge=1, le=1000, description="At most this many records, newest scheduled first.")


class BulkReplayResponse(BaseModel):
    success: bool
    replayed: int = Field(description="Firings enqueued again.")
    skipped: int = Field(description="Matching records not replayed: trigger gone, in progress, or overlap active.")


class AlertsSettings(BaseModel):
    url: str = Field(description="Where alerts are POSTed (signed like deliveries).")
    after_failures: int = Field(description="Alert when a trigger's consecutive failed firings reach this.")


class RateLimitSettings(BaseModel):
    host: str = Field(description="Lower-case, IDNA-encoded, no port.")
    per_second: float | None = Field(description="Requests a second; null: no bound.")
    concurrency: int | None = Field(description="Requests in flight at once; null: no bound.")


class WorkspaceSettingsResponse(BaseModel):
    success: bool
    workspace_id: str
    alerts: AlertsSettings | None = Field(description="Failure and recovery alerts; null: none.")
    auto_disable_after_failures: int | None = Field(
        description="A trigger is disabled after this many consecutive failed firings; null: never."
    )
    rate_limits: list[RateLimitSettings] = Field(description="Per-host limits of deliveries, held across all workers.")
