"""A workspace as a whole: pause and resume (its triggers keep their schedule)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from scheduler_api.api import quotas
from scheduler_api.api.deps import WorkspaceId, redis_of
from scheduler_api.api.schemas import ERRORS, PauseResponse
from scheduler_api.storage import triggers as store

router = APIRouter()


def _pause(request: Request, workspace_id: str, paused: bool) -> dict[str, Any]:
    quotas.count_write(request, workspace_id)  # a write call: 429 beyond WRITES_PER_MINUTE
    store.set_paused(redis_of(request), workspace_id, paused)
    return {"success": True, "workspace_id": workspace_id, "paused": paused}


@router.post("/api/workspaces/{workspace_id}/pause", response_model=PauseResponse, responses=ERRORS)
def pause(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """Pause the whole workspace: its triggers keep their schedule but do not fire."""
    return _pause(request, workspace_id, True)


@router.post("/api/workspaces/{workspace_id}/resume", response_model=PauseResponse, responses=ERRORS)
def resume(request: Request, workspace_id: str = WorkspaceId) -> dict[str, Any]:
    """Resume the workspace: its triggers fire again from their next scheduled time."""
    return _pause(request, workspace_id, False)
