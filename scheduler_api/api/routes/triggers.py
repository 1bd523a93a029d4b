"""The HTTP endpoints, thin: check the input, call `store`, shape the response as the original did."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api.api.schemas import (
    ERRORS,
    DeleteResponse,
    ErrorResponse,
    HealthResponse,
    ListResponse,
    ReplaceResponse,
)
from scheduler_api.errors import InvalidRequest
from scheduler_api.settings import Settings
from scheduler_api.ssrf import TargetPolicy
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import WORKSPACE_ID, ReplaceTriggers, check_limits

router = APIRouter()
api = APIRouter()  # everything under /api: behind the API-key check (api.app.ApiKeyCheck)

WorkspaceId = Path(
    min_length=1,
    max_length=128,
    pattern=WORKSPACE_ID.pattern,
    description="1-128 characters of A-Z a-z 0-9 _ . -",
)


def _redis(request: Request) -> Redis:
    conn: Redis = request.app.state.redis
    return conn


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _job(t: store.StoredTrigger) -> dict[str, Any]:
    return {"jobId": t.job_id, "jobName": t.job_name, "cron": t.cron, "url": t.url, "method": t.method}


def listed_job(t: store.StoredTrigger, *, workspace_paused: bool) -> dict[str, Any]:
    """A trigger as GET shows it: the original fields plus schedule state; header names only."""
    return {
        **_job(t),
        "next_run_at": cronlib.iso(t.next_run_at) if t.next_run_at is not None else None,
        "header_names": sorted(t.headers),
        "has_payload": t.payload is not None,
        "timezone": t.timezone,
        "enabled": t.enabled,
        "paused": workspace_paused or not t.enabled,
    }


@api.post(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ReplaceResponse,
    responses=ERRORS,
    summary="Replace all triggers of a workspace",
)
def replace_triggers(request: Request, body: ReplaceTriggers, workspace_id: str = WorkspaceId) -> JSONResponse:
    settings = _settings(request)
    limit = settings.max_triggers_per_workspace
    if len(body.triggers) > limit:
        raise InvalidRequest(
            "Too many triggers",
            [{"path": "triggers", "message": f"at most {limit} per workspace, got {len(body.triggers)}"}],
        )
    details = check_limits(body.triggers, settings)
    policy: TargetPolicy = request.app.state.target_policy
    for i, trigger in enumerate(body.triggers):
        why = policy.check_url(trigger.url)
        if why:
            details.append({"path": f"triggers[{i}].url", "message": f"deliveries to {why} are not allowed"})
    if details:
        raise InvalidRequest("Invalid request", details)
    removed, stored = store.replace(_redis(request), workspace_id, body.triggers, cipher=request.app.state.cipher)
    # Returned as a response, not a dict: FastAPI would validate it again against ReplaceResponse
    # (which still documents it), a cost the size of the list; the shape is checked by the tests.
    return JSONResponse(
        {
            "success": True,
            "workspace_id": workspace_id,
            "removed": removed,
            "added": len(stored),
            "jobs": [_job(t) for t in stored],
        }
    )


@api.get(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ListResponse,
    responses=ERRORS,
    summary="List the triggers of a workspace",
)
def list_triggers(request: Request, workspace_id: str = WorkspaceId) -> JSONResponse:
    triggers = store.list_triggers(_redis(request), workspace_id)
    paused = store.is_paused(_redis(request), workspace_id)
    jobs = [listed_job(t, workspace_paused=paused) for t in triggers]
    return JSONResponse({"success": True, "workspace_id": workspace_id, "count": len(jobs), "jobs": jobs})


@api.delete(
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
