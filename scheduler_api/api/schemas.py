"""Response models of the API (they also shape the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field


class Job(BaseModel):
    jobId: str = Field(description="`{workspace_id}:{index}`")
    jobName: str = Field(description="`{workspace_id}-trigger-{index}`")
    cron: str
    url: str
    method: str


class ListedJob(Job):
    next_run_at: str | None = Field(None, description="Next scheduled run, ISO 8601 UTC.")
    header_names: list[str] = Field(default_factory=list, description="Header names; values are never shown.")
    has_payload: bool = False
    timezone: str = "UTC"
    enabled: bool = True
    paused: bool = Field(False, description="True when the trigger is disabled or its workspace is paused.")


class ReplaceResponse(BaseModel):
    success: bool
    workspace_id: str
    removed: int
    added: int
    jobs: list[Job]


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


class TriggerDetail(ListedJob):
    description: str = Field(description="The schedule in words.")
    next_runs: list[str] = Field(description="The next 5 run times, ISO 8601 UTC.")


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
    cron: str
    timezone: str | None = None
    after: Annotated[AwareDatetime, BeforeValidator(_iso_text)] | None = Field(
        None, description="Show the runs after this instant (ISO 8601 with an offset or Z); default now."
    )


class PreviewResponse(BaseModel):
    success: bool
    cron: str
    timezone: str
    description: str
    next_runs: list[str]


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


class Delivery(BaseModel):
    id: str = Field(description="The firing id, `{jobId}@{scheduled time}`; also its Idempotency-Key.")
    jobId: str
    workspace_id: str | None = None
    scheduled_at: str
    outcome: str = Field(description="delivered, failed, retrying, missed or blocked")
    attempts: list[Attempt] = Field(default_factory=list)
    finished_at: str | None = None
    next_attempt_at: str | None = Field(None, description="When a retrying firing is tried again.")
    late_seconds: float | None = Field(None, description="How late a missed firing was when a scheduler saw it.")
    missed_since: str | None = Field(None, description="The first run time a missed firing's scheduler passed over.")


class DeliveriesResponse(BaseModel):
    success: bool
    workspace_id: str
    count: int
    deliveries: list[Delivery]
