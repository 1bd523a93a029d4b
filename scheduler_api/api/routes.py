"""The HTTP endpoints, thin: check the input, call `store`, shape the response as the original did."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api import store
from scheduler_api.errors import InvalidRequest
from scheduler_api.settings import Settings
from scheduler_api.triggers import WORKSPACE_ID, ReplaceTriggers

router = APIRouter()

WorkspaceId = Path(
    min_length=1,
    max_length=128,
    pattern=WORKSPACE_ID.pattern,
    description="1-128 characters of A-Z a-z 0-9 _ . -",
)


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
    413: {"model": ErrorResponse, "description": "Body too large."},
    503: {"model": ErrorResponse, "description": "Redis is unreachable."},
}


def _redis(request: Request) -> Redis:
    conn: Redis = request.app.state.redis
    return conn


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _job(t: store.StoredTrigger) -> dict[str, Any]:
    return {"jobId": t.job_id, "jobName": t.job_name, "cron": t.cron, "url": t.url, "method": t.method}


@router.post(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ReplaceResponse,
    responses=ERRORS,
    summary="Replace all triggers of a workspace",
)
def replace_triggers(request: Request, body: ReplaceTriggers, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    limit = _settings(request).max_triggers_per_workspace
    if len(body.triggers) > limit:
        raise InvalidRequest(
            "Too many triggers",
            [{"path": "triggers", "message": f"at most {limit} per workspace, got {len(body.triggers)}"}],
        )
    removed, stored = store.replace(_redis(request), workspace_id, body.triggers)
    return {
        "success": True,
        "workspace_id": workspace_id,
        "removed": removed,
        "added": len(stored),
        "jobs": [_job(t) for t in stored],
    }


@router.get(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ListResponse,
    responses=ERRORS,
    summary="List the triggers of a workspace",
)
def list_triggers(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    triggers = store.list_triggers(_redis(request), workspace_id)
    jobs = [
        {
            **_job(t),
            "next_run_at": cronlib.iso(t.next_run_at) if t.next_run_at is not None else None,
            "header_names": sorted(t.headers),
            "has_payload": t.payload is not None,
        }
        for t in triggers
    ]
    return {"success": True, "workspace_id": workspace_id, "count": len(jobs), "jobs": jobs}


@router.delete(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=DeleteResponse,
    responses=ERRORS,
    summary="Remove all triggers of a workspace",
)
def delete_triggers(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    removed = store.delete(_redis(request), workspace_id)
    return {"success": True, "workspace_id": workspace_id, "removed": removed}


@router.get("/health", response_model=HealthResponse, summary="Liveness: the API process answers")
def health() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"status": "ok", "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


@router.get(
    "/ready",
    response_model=HealthResponse,
    responses={503: {"model": ErrorResponse, "description": "Redis is unreachable."}},
    summary="Readiness: the API can reach Redis",
)
def ready(request: Request) -> Any:
    with store.redis_errors():
        _redis(request).ping()
    now = datetime.now(UTC)
    return JSONResponse({"status": "ready", "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
