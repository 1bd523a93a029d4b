"""A workspace's delivery history: one record per firing, newest first; and replays of its firings.

Replay (README "Replay"; the rules are scheduler_api.storage.replay's): one firing
(``POST .../deliveries/{firing_id}/replay``) or the records a filter selects
(``POST .../deliveries/replay``), each sent again as itself with its trigger's current definition.
A replay call counts as one run-now call (RUN_NOW_PER_MINUTE, 429 beyond; a 404 is not counted).
One firing: 404 when the workspace has no record of it (a firing of another workspace included:
its id names its workspace), 409 when its trigger is gone, it is in progress (retrying, or a replay
of it not finished) or its trigger's overlap rule holds another firing active. The filter replays
what it can and counts the rest as skipped.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from scheduler_api.api import quotas
from scheduler_api.api.deps import WorkspaceId, redis_of
from scheduler_api.api.errors import error_body
from scheduler_api.api.schemas import (
    ERRORS,
    BulkReplayRequest,
    BulkReplayResponse,
    DeliveriesResponse,
    ReplayResponse,
)
from scheduler_api.errors import InvalidRequest, NotFound
from scheduler_api.storage import history, replay
from scheduler_api.storage.replay import Answer
from scheduler_api.triggers import TRIGGER_ID

router = APIRouter()

FiringId = Path(
    min_length=1, max_length=256, description="The firing id, `{jobId}@{scheduled time}` (its Idempotency-Key)."
)
REPLAY_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 404: ERRORS[400], 409: ERRORS[400]}

# Why a replay of one firing is refused (409), by the answer of scheduler_api.storage.replay.
CONFLICTS = {
    Answer.GONE: "its trigger no longer exists: a replay sends the trigger's current definition",
    Answer.PENDING: "the firing is in progress (retrying, or a replay of it not finished); "
    "replay it once it has a final outcome",
    Answer.ACTIVE: "its trigger's overlap rule holds another firing active; replay it once that one has finished",
    Answer.CHANGED: "its record kept changing while it was replayed; try again",
}


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


@router.post(
    "/api/workspaces/{workspace_id}/deliveries/replay",
    status_code=202,
    response_model=BulkReplayResponse,
    responses={**ERRORS, 429: ERRORS[400]},
    summary="Replay the records a filter selects (default: failed), newest first, at most `limit`",
)
def replay_matching(request: Request, body: BulkReplayRequest, workspace_id: str = WorkspaceId) -> JSONResponse:
    since = body.since.timestamp() if body.since is not None else None
    until = body.until.timestamp() if body.until is not None else None
    if since is not None and until is not None and since > until:
        raise InvalidRequest("Invalid request", [{"path": "until", "message": "must not be before since"}])
    quotas.count_run_now(request, workspace_id)
    done = replay.replay_matching(
        redis_of(request),
        workspace_id,
        outcome=body.outcome,
        trigger=body.trigger,
        since=since,
        until=until,
        limit=body.limit,
    )
    return JSONResponse({"success": True, "replayed": done.replayed, "skipped": done.skipped}, status_code=202)


@router.post(
    "/api/workspaces/{workspace_id}/deliveries/{firing_id}/replay",
    status_code=202,
    response_model=ReplayResponse,
    responses=REPLAY_ERRORS,
    summary="Send a recorded firing again as itself: same id and Idempotency-Key, the trigger's current definition",
)
def replay_one(request: Request, workspace_id: str = WorkspaceId, firing_id: str = FiringId) -> JSONResponse:
    conn = redis_of(request)
    if not replay.has_record(conn, workspace_id, firing_id):
        raise _not_found(workspace_id, firing_id)
    quotas.count_run_now(request, workspace_id)  # 429 beyond RUN_NOW_PER_MINUTE (a 404 is not counted)
    done = replay.replay(conn, workspace_id, firing_id)
    if done.answer is Answer.NONE:  # its record went (retention) since it was found
        raise _not_found(workspace_id, firing_id)
    if done.answer is not Answer.REPLAYED:
        why = f"firing {firing_id!r} cannot be replayed now: {CONFLICTS[done.answer]}"
        return JSONResponse(error_body("Conflict", [{"path": "firing_id", "message": why}]), status_code=409)
    return JSONResponse({"success": True, "firing_id": firing_id, "replay": done.number}, status_code=202)


def _not_found(workspace_id: str, firing_id: str) -> NotFound:
    return NotFound(
        "Delivery record not found",
        [{"path": "firing_id", "message": f"workspace {workspace_id!r} has no record of firing {firing_id!r}"}],
    )
