"""A workspace's triggers: the original's replace / list / delete of the whole list, and one trigger
by its id (view, create or replace, merge-patch, delete, run now).

Every answer about a workspace's triggers carries its `ETag`; every write honours `If-Match` (412
when stale, nothing changed) and `?dry_run=true` (the plan, its diff and warnings; nothing
changed). Writes go through scheduler_api.storage.edits, which keeps identity by id (README
"Trigger identity").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from scheduler_api.api import quotas, writes
from scheduler_api.api.deps import (
    DryRun,
    IfMatch,
    IfNoneMatch,
    TriggerId,
    WorkspaceId,
    cipher_of,
    etags,
    quoted,
    redis_of,
    settings_of,
)
from scheduler_api.api.patches import merge_patch, moves_headers_elsewhere, trigger_as_input
from scheduler_api.api.schemas import (
    ERRORS,
    WRITE_ERRORS,
    DeleteResponse,
    DryRunResponse,
    ListResponse,
    PutResponse,
    ReplaceResponse,
    RunResponse,
    TriggerResponse,
)
from scheduler_api.api.views import job, listed_job, trigger_schedule
from scheduler_api.errors import InvalidRequest, NotFound, PreconditionFailed
from scheduler_api.storage import edits, firings, state
from scheduler_api.storage import triggers as store
from scheduler_api.storage.edits import Plan
from scheduler_api.triggers import ReplaceTriggers, Trigger

router = APIRouter()
LIST = "/api/workspaces/{workspace_id}/triggers"
ONE = "/api/workspaces/{workspace_id}/triggers/{trigger_id}"


@router.post(
    LIST,
    response_model=ReplaceResponse | DryRunResponse,
    responses=WRITE_ERRORS,
    summary="Replace all triggers of a workspace",
)
def replace_triggers(
    request: Request,
    body: ReplaceTriggers,
    workspace_id: str = WorkspaceId,
    dry_run: bool = DryRun,
    if_match: str | None = IfMatch,
) -> JSONResponse:
    limit = settings_of(request).max_triggers_per_workspace
    if len(body.triggers) > limit:
        raise InvalidRequest(
            "Too many triggers",
            [{"path": "triggers", "message": f"at most {limit} per workspace, got {len(body.triggers)}"}],
        )
    paths = [f"triggers[{i}]" for i in range(len(body.triggers))]
    writes.check(request, body.triggers, paths)
    cipher = cipher_of(request)
    plan = writes.apply(
        request,
        workspace_id,
        lambda snap: edits.plan_replace(snap, body.triggers, now=time.time(), cipher=cipher),
        if_match,
        dry_run,
    )
    warnings = writes.warnings(request, list(zip(paths, body.triggers, strict=True)))
    if dry_run:
        return writes.dry_run(request, workspace_id, plan, warnings)
    paused = store.is_paused(redis_of(request), workspace_id)
    answer: dict[str, Any] = {
        "success": True,
        "workspace_id": workspace_id,
        "removed": plan.before,
        "added": len(plan.triggers),
        "jobs": [job(t, workspace_paused=paused) for t in plan.triggers],
    }
    if warnings:
        answer["warnings"] = warnings
    # A response, not a dict: FastAPI would validate it again against ReplaceResponse (which still
    # documents it), a cost the size of the list.
    return JSONResponse(answer, headers=writes.etag_header(plan))


@router.get(LIST, response_model=ListResponse, responses=ERRORS, summary="List the triggers of a workspace")
def list_triggers(request: Request, workspace_id: str = WorkspaceId) -> JSONResponse:
    conn = redis_of(request)
    snapshot = store.read(conn, workspace_id)
    paused = store.is_paused(conn, workspace_id)
    jobs = [listed_job(t, workspace_paused=paused) for t in snapshot.triggers]
    return JSONResponse(
        {"success": True, "workspace_id": workspace_id, "count": len(jobs), "jobs": jobs},
        headers={"ETag": quoted(snapshot.etag)},
    )


@router.delete(
    LIST,
    response_model=DeleteResponse | DryRunResponse,
    responses=WRITE_ERRORS,
    summary="Remove all triggers of a workspace",
)
def delete_triggers(
    request: Request, workspace_id: str = WorkspaceId, dry_run: bool = DryRun, if_match: str | None = IfMatch
) -> JSONResponse:
    plan = writes.apply(request, workspace_id, edits.plan_delete_all, if_match, dry_run)
    if dry_run:
        return writes.dry_run(request, workspace_id, plan, [])
    return JSONResponse(
        {"success": True, "workspace_id": workspace_id, "removed": plan.before},
        headers=writes.etag_header(plan),
    )


def _find(request: Request, workspace_id: str, trigger_id: str) -> tuple[store.StoredTrigger, str]:
    snapshot = store.read(redis_of(request), workspace_id)
    found = snapshot.find(trigger_id)
    if found is None:
        raise _not_found(workspace_id, trigger_id)
    return found, snapshot.etag


def _not_found(workspace_id: str, trigger_id: str) -> NotFound:
    return NotFound(
        "Trigger not found",
        [{"path": "trigger_id", "message": f"workspace {workspace_id!r} has no trigger {trigger_id!r}"}],
    )


@router.get(
    ONE,
    response_model=TriggerResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="One trigger with its next 5 runs and its schedule in words",
)
def get_trigger(request: Request, workspace_id: str = WorkspaceId, trigger_id: str = TriggerId) -> JSONResponse:
    t, etag = _find(request, workspace_id, trigger_id)
    fired = state.fired_count(redis_of(request), workspace_id, trigger_id) if t.max_firings else 0
    description, runs = trigger_schedule(t, fired=fired)
    shown = listed_job(t, workspace_paused=store.is_paused(redis_of(request), workspace_id))
    return JSONResponse(
        {
            "success": True,
            "workspace_id": workspace_id,
            "job": {**shown, "payload": t.payload, "description": description, "next_runs": runs},
        },
        headers={"ETag": quoted(etag)},
    )


def _write_one(
    request: Request,
    workspace_id: str,
    trigger_id: str,
    build: Callable[[store.Snapshot], Trigger],
    *,
    if_match: str | None,
    create_only: bool,
    dry_run: bool,
    status_created: int,
    none_match: tuple[str, ...] = (),
) -> JSONResponse:
    """Create or replace one trigger. `build` makes it from the snapshot the change is planned on,
    so a PATCH merges into what is stored at that moment (a concurrent write is never lost)."""
    cipher = cipher_of(request)
    built: list[Trigger] = []

    def planner(snapshot: store.Snapshot) -> Plan:
        exists = snapshot.find(trigger_id) is not None
        if create_only and exists:
            raise PreconditionFailed(
                "Precondition failed",
                [{"path": "headers.if-none-match", "message": f"trigger {trigger_id!r} exists already"}],
            )
        if snapshot.etag in none_match:
            why = f'the workspace\'s ETag is "{snapshot.etag}", which If-None-Match names'
            raise PreconditionFailed("Precondition failed", [{"path": "headers.if-none-match", "message": why}])
        if if_match is not None and if_match.strip() == "*" and not exists:
            raise PreconditionFailed(
                "Precondition failed",
                [{"path": "headers.if-match", "message": f"no trigger {trigger_id!r} to match *"}],
            )
        trigger = build(snapshot)
        if trigger.id is not None and trigger.id != trigger_id:
            why = f"must be the path's id {trigger_id!r}, got {trigger.id!r}"
            raise InvalidRequest("Invalid request", [{"path": "id", "message": why}])
        writes.check(request, [trigger], [""])
        built[:] = [trigger]
        return edits.plan_put(snapshot, trigger_id, trigger, now=time.time(), cipher=cipher)

    plan = writes.apply(request, workspace_id, planner, if_match, dry_run)
    warnings = writes.warnings(request, [("trigger", built[0])])
    if dry_run:
        return writes.dry_run(request, workspace_id, plan, warnings)
    created = trigger_id in plan.diff.added
    stored = next(t for t in plan.triggers if t.id == trigger_id)
    answer: dict[str, Any] = {
        "success": True,
        "workspace_id": workspace_id,
        "created": created,
        "job": listed_job(stored, workspace_paused=store.is_paused(redis_of(request), workspace_id)),
    }
    if warnings:
        answer["warnings"] = warnings
    status = status_created if created else 200
    return JSONResponse(answer, status_code=status, headers=writes.etag_header(plan))


@router.put(
    ONE,
    response_model=PutResponse | DryRunResponse,
    status_code=200,
    responses={**WRITE_ERRORS, 201: {"model": PutResponse, "description": "Created."}},
    summary="Create (201) or replace (200) one trigger",
)
def put_trigger(
    request: Request,
    body: Trigger,
    workspace_id: str = WorkspaceId,
    trigger_id: str = TriggerId,
    dry_run: bool = DryRun,
    if_match: str | None = IfMatch,
    if_none_match: str | None = IfNoneMatch,
) -> JSONResponse:
    create_only = if_none_match is not None and if_none_match.strip() == "*"
    none_match = () if create_only else etags(if_none_match)
    return _write_one(
        request,
        workspace_id,
        trigger_id,
        lambda snapshot: body,
        if_match=if_match,
        create_only=create_only,
        dry_run=dry_run,
        status_created=201,
        none_match=none_match,
    )


@router.patch(
    ONE,
    response_model=PutResponse | DryRunResponse,
    responses={**WRITE_ERRORS, 404: ERRORS[400]},
    summary="Change one trigger with a JSON Merge Patch (RFC 7396); header values not named are kept",
)
def patch_trigger(
    request: Request,
    patch: dict[str, Any] = Body(..., media_type="application/merge-patch+json"),  # noqa: B008 - FastAPI's idiom
    workspace_id: str = WorkspaceId,
    trigger_id: str = TriggerId,
    dry_run: bool = DryRun,
    if_match: str | None = IfMatch,
) -> JSONResponse:
    if "id" in patch and patch["id"] != trigger_id:
        raise InvalidRequest("Invalid request", [{"path": "id", "message": "a trigger's id cannot be patched"}])
    cipher = cipher_of(request)

    def merged(snapshot: store.Snapshot) -> Trigger:
        stored = snapshot.find(trigger_id)
        if stored is None:
            raise _not_found(workspace_id, trigger_id)
        merged = merge_patch(trigger_as_input(stored, cipher), patch)
        if moves_headers_elsewhere(stored.url, merged, patch):
            why = "the url moves to another scheme, host or port: send the headers again (stored values never follow)"
            raise InvalidRequest("Invalid request", [{"path": "headers", "message": why}])
        try:
            return Trigger.model_validate(merged)
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None

    return _write_one(
        request,
        workspace_id,
        trigger_id,
        merged,
        if_match=if_match,
        create_only=False,
        dry_run=dry_run,
        status_created=200,
    )


@router.delete(
    ONE,
    response_model=DeleteResponse | DryRunResponse,
    responses={**WRITE_ERRORS, 404: ERRORS[400]},
    summary="Remove one trigger: its future firings never start",
)
def delete_trigger(
    request: Request,
    workspace_id: str = WorkspaceId,
    trigger_id: str = TriggerId,
    dry_run: bool = DryRun,
    if_match: str | None = IfMatch,
) -> JSONResponse:
    def planner(snapshot: store.Snapshot) -> Plan:
        if snapshot.find(trigger_id) is None:
            raise _not_found(workspace_id, trigger_id)
        return edits.plan_delete(snapshot, trigger_id)

    plan = writes.apply(request, workspace_id, planner, if_match, dry_run)
    if dry_run:
        return writes.dry_run(request, workspace_id, plan, [])
    return JSONResponse({"success": True, "workspace_id": workspace_id, "removed": 1}, headers=writes.etag_header(plan))


@router.post(
    ONE + "/run",
    status_code=202,
    response_model=RunResponse,
    responses={**ERRORS, 404: ERRORS[400]},
    summary="Fire one trigger now (same retries, recorded in the history)",
)
def run_now(request: Request, workspace_id: str = WorkspaceId, trigger_id: str = TriggerId) -> Response:
    t, _ = _find(request, workspace_id, trigger_id)
    quotas.count_run_now(request, workspace_id)  # 429 beyond RUN_NOW_PER_MINUTE (a 404 is not counted)
    firing_id = firings.enqueue_now(redis_of(request), t)
    return JSONResponse(
        {"success": True, "workspace_id": workspace_id, "jobId": t.job_id, "firing_id": firing_id}, status_code=202
    )
