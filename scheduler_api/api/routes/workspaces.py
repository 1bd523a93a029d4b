"""Endpoints beyond the original contract: one trigger, cron preview, pause / resume, run now,
delivery history. All under /api, so behind the API-key check; all additive."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from scheduler_api import cron as cronlib
from scheduler_api.api.routes.triggers import WorkspaceId, _redis, listed_job
from scheduler_api.api.schemas import (
    ERRORS,
    DeliveriesResponse,
    PauseResponse,
    PreviewRequest,
    PreviewResponse,
    RunResponse,
    TriggerResponse,
)
from scheduler_api.errors import InvalidRequest
from scheduler_api.storage import history
from scheduler_api.storage import triggers as store

controls = APIRouter()

NEXT_RUNS = 5
TriggerIndex = Path(ge=0, le=1_000_000, description="The trigger's index in its workspace's list.")


def _find(request: Request, workspace_id: str, index: int) -> store.StoredTrigger:
    for t in store.list_triggers(_redis(request), workspace_id):
        if t.index == index:
            return t
    raise InvalidRequest(
        "Trigger not found",
        [{"path": "index", "message": f"workspace {workspace_id!r} has no trigger {index}"}],
        status=404,
    )


def _schedule_view(cron: str, tz: str | None, *, path: str, new: bool = True) -> tuple[cronlib.Cron, str, list[str]]:
    # `new`: input, held to the rules for new input (cronlib.validate); else a stored definition.
    # The zone is checked on its own, so an error is blamed on the field that caused it (a cron
    # whose text happens to say "time zone" is still a cron error) and "" is refused as it is for
    # a trigger's timezone.
    field = "timezone"
    try:
        zone = "UTC" if tz is None else cronlib.check_timezone(tz)
        field = "cron"
        parsed = cronlib.validate(cron, zone) if new else cronlib.parse(cron, zone)
    except cronlib.CronError as e:
        raise InvalidRequest("Invalid request", [{"path": f"{path}{field}", "message": str(e)}]) from None
    runs = [cronlib.iso(ts) for ts in parsed.next_runs(time.time(), NEXT_RUNS)]
    return parsed, cronlib.describe(parsed), runs


@controls.get(
    "/api/workspaces/{workspace_id}/triggers/{index}",
    response_model=TriggerResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="One trigger with its next 5 runs and its schedule in words",
)
def get_trigger(request: Request, workspace_id: str = WorkspaceId, index: int = TriggerIndex) -> dict[str, Any]:
    t = _find(request, workspace_id, index)
    _, description, runs = _schedule_view(t.cron, t.timezone, path="", new=False)
    job = listed_job(t, workspace_paused=store.is_paused(_redis(request), workspace_id))
    return {
        "success": True,
        "workspace_id": workspace_id,
        "job": {**job, "description": description, "next_runs": runs},
    }


@controls.post(
    "/api/cron/preview",
    response_model=PreviewResponse,
    responses=ERRORS,
    summary="Validate a cron expression and show its next runs, storing nothing",
)
def preview(body: PreviewRequest) -> dict[str, Any]:
    parsed, description, runs = _schedule_view(body.cron, body.timezone, path="")
    return {
        "success": True,
        "cron": body.cron,
        "timezone": parsed.tz,
        "description": description,
        "next_runs": runs,
    }


def _pause(request: Request, workspace_id: str, paused: bool) -> dict[str, Any]:
    store.set_paused(_redis(request), workspace_id, paused)
    return {"success": True, "workspace_id": workspace_id, "paused": paused}


@controls.post("/api/workspaces/{workspace_id}/pause", response_model=PauseResponse, responses=ERRORS)
def pause(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """Pause the whole workspace: its triggers keep their schedule but do not fire."""
    return _pause(request, workspace_id, True)


@controls.post("/api/workspaces/{workspace_id}/resume", response_model=PauseResponse, responses=ERRORS)
def resume(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """Resume the workspace: its triggers fire again from their next scheduled time."""
    return _pause(request, workspace_id, False)


@controls.post(
    "/api/workspaces/{workspace_id}/triggers/{index}/run",
    status_code=202,
    response_model=RunResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="Fire one trigger now (same retries, recorded in the history)",
)
def run_now(request: Request, workspace_id: str = WorkspaceId, index: int = TriggerIndex) -> JSONResponse:
    t = _find(request, workspace_id, index)
    firing_id = history.run_now(_redis(request), t)
    return JSONResponse(
        {"success": True, "workspace_id": workspace_id, "jobId": t.job_id, "firing_id": firing_id}, status_code=202
    )


@controls.get(
    "/api/workspaces/{workspace_id}/deliveries",
    response_model=DeliveriesResponse,
    responses=ERRORS,
    summary="Delivery history, newest first: one record per firing",
)
def deliveries(
    request: Request,
    workspace_id: str = WorkspaceId,
    trigger: Annotated[int | None, Query(ge=0, description="Only this trigger index.")] = None,
    outcome: Annotated[history.OutcomeName | None, Query(description="Only this outcome.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many records.")] = 100,
) -> dict[str, Any]:
    records = history.list_records(_redis(request), workspace_id, trigger=trigger, outcome=outcome, limit=limit)
    return {"success": True, "workspace_id": workspace_id, "count": len(records), "deliveries": records}
