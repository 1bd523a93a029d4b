"""A workspace's delivery history: one record per firing, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from scheduler_api.api.deps import WorkspaceId, redis_of
from scheduler_api.api.schemas import ERRORS, DeliveriesResponse
from scheduler_api.storage import history
from scheduler_api.triggers import TRIGGER_ID

router = APIRouter()


@router.get(
    "/api/workspaces/{workspace_id}/deliveries",
    response_model=DeliveriesResponse,
    responses=ERRORS,
    summary="Delivery history, newest first: one record per firing",
)
def deliveries(
    request: Request,
    workspace_id: str = WorkspaceId,
    trigger: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=TRIGGER_ID.pattern, description="Only this trigger id.")
    ] = None,
    outcome: Annotated[history.OutcomeName | None, Query(description="Only this outcome.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many records.")] = 100,
) -> dict[str, Any]:
    records = history.list_records(redis_of(request), workspace_id, trigger=trigger, outcome=outcome, limit=limit)
    return {"success": True, "workspace_id": workspace_id, "count": len(records), "deliveries": records}
