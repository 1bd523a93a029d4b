"""A workspace's triggers: the original's replace / list / delete of the whole list, and one
trigger by its index (view, run now)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scheduler_api.api.deps import TriggerIndex, WorkspaceId, cipher_of, redis_of, settings_of, target_policy_of
from scheduler_api.api.schemas import (
    ERRORS,
    DeleteResponse,
    ListResponse,
    ReplaceResponse,
    RunResponse,
    TriggerResponse,
)
from scheduler_api.api.views import job, listed_job, schedule_view
from scheduler_api.errors import InvalidRequest, NotFound
from scheduler_api.storage import firings
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import ReplaceTriggers, check_limits

router = APIRouter()


@router.post(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ReplaceResponse,
    responses=ERRORS,
    summary="Replace all triggers of a workspace",
)
def replace_triggers(request: Request, body: ReplaceTriggers, workspace_id: str = WorkspaceId) -> JSONResponse:
    settings = settings_of(request)
    limit = settings.max_triggers_per_workspace
    if len(body.triggers) > limit:
        raise InvalidRequest(
            "Too many triggers",
            [{"path": "triggers", "message": f"at most {limit} per workspace, got {len(body.triggers)}"}],
        )
    details = check_limits(body.triggers, settings)
    policy = target_policy_of(request)
    for i, trigger in enumerate(body.triggers):
        why = policy.check_url(trigger.url)
        if why:
            details.append({"path": f"triggers[{i}].url", "message": f"deliveries to {why} are not allowed"})
    if details:
        raise InvalidRequest("Invalid request", details)
    removed, stored = store.replace(redis_of(request), workspace_id, body.triggers, cipher=cipher_of(request))
    # Returned as a response, not a dict: FastAPI would validate it again against ReplaceResponse
    # (which still documents it), a cost the size of the list; the shape is checked by the tests.
    return JSONResponse(
        {
            "success": True,
            "workspace_id": workspace_id,
            "removed": removed,
            "added": len(stored),
            "jobs": [job(t) for t in stored],
        }
    )


@router.get(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=ListResponse,
    responses=ERRORS,
    summary="List the triggers of a workspace",
)
def list_triggers(request: Request, workspace_id: str = WorkspaceId) -> JSONResponse:
    conn = redis_of(request)
    triggers = store.list_triggers(conn, workspace_id)
    paused = store.is_paused(conn, workspace_id)
    jobs = [listed_job(t, workspace_paused=paused) for t in triggers]
    return JSONResponse({"success": True, "workspace_id": workspace_id, "count": len(jobs), "jobs": jobs})


@router.delete(
    "/api/workspaces/{workspace_id}/triggers",
    response_model=DeleteResponse,
    responses=ERRORS,
    summary="Remove all triggers of a workspace",
)
def delete_triggers(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    removed = store.delete(redis_of(request), workspace_id)
    return {"success": True, "workspace_id": workspace_id, "removed": removed}


def _find(request: Request, workspace_id: str, index: int) -> store.StoredTrigger:
    for t in store.list_triggers(redis_of(request), workspace_id):
        if t.index == index:
            return t
    raise NotFound(
        "Trigger not found", [{"path": "index", "message": f"workspace {workspace_id!r} has no trigger {index}"}]
    )


@router.get(
    "/api/workspaces/{workspace_id}/triggers/{index}",
    response_model=TriggerResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="One trigger with its next 5 runs and its schedule in words",
)
def get_trigger(request: Request, workspace_id: str = WorkspaceId, index: int = TriggerIndex) -> dict[str, Any]:
    t = _find(request, workspace_id, index)
    _, description, runs = schedule_view(t.cron, t.timezone, path="", new=False)
    shown = listed_job(t, workspace_paused=store.is_paused(redis_of(request), workspace_id))
    return {
        "success": True,
        "workspace_id": workspace_id,
        "job": {**shown, "description": description, "next_runs": runs},
    }


@router.post(
    "/api/workspaces/{workspace_id}/triggers/{index}/run",
    status_code=202,
    response_model=RunResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="Fire one trigger now (same retries, recorded in the history)",
)
def run_now(request: Request, workspace_id: str = WorkspaceId, index: int = TriggerIndex) -> JSONResponse:
    t = _find(request, workspace_id, index)
    firing_id = firings.enqueue_now(redis_of(request), t)
    return JSONResponse(
        {"success": True, "workspace_id": workspace_id, "jobId": t.job_id, "firing_id": firing_id}, status_code=202
    )
