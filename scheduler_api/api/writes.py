"""What every write of a workspace's triggers shares: the limits and SSRF checks, the warnings,
the change applied through scheduler_api.storage.edits, and the dry-run answer."""

from __future__ import annotations

import time

from fastapi import Request
from fastapi.responses import JSONResponse

from scheduler_api.api import quotas
from scheduler_api.api.deps import etags, quoted, redis_of, settings_of, target_policy_of
from scheduler_api.api.views import listed_job
from scheduler_api.errors import InvalidRequest
from scheduler_api.schedule_warnings import DeliveryPolicy, schedule_warnings
from scheduler_api.storage import edits
from scheduler_api.storage import triggers as store
from scheduler_api.storage.edits import Plan
from scheduler_api.triggers import Trigger, check_limits


def check(request: Request, triggers: list[Trigger], paths: list[str]) -> None:
    """The settings' limits and the SSRF guard on each trigger's url; 400 naming every problem."""
    details = check_limits(triggers, settings_of(request), paths=paths)
    policy = target_policy_of(request)
    for path, trigger in zip(paths, triggers, strict=True):
        why = policy.check_url(trigger.url)
        if why:
            details.append(
                {"path": f"{path}.url" if path else "url", "message": f"deliveries to {why} are not allowed"}
            )
    if details:
        raise InvalidRequest("Invalid request", details)


def warnings(request: Request, items: list[tuple[str, Trigger]]) -> list[dict[str, str]]:
    return schedule_warnings(items, now=time.time(), policy=DeliveryPolicy.from_settings(settings_of(request)))


def apply(request: Request, workspace_id: str, planner: edits.Planner, if_match: str | None, dry_run: bool) -> Plan:
    quotas.count_write(request, workspace_id)  # 429 beyond WRITES_PER_MINUTE; `sized`: 403 over a scope quota
    with quotas.sized(request, workspace_id, planner, dry_run=dry_run) as checked:
        return edits.apply(
            redis_of(request),
            workspace_id,
            checked,
            if_match=etags(if_match),
            max_triggers=settings_of(request).max_triggers_per_workspace,
            dry_run=dry_run,
        )


def dry_run(request: Request, workspace_id: str, plan: Plan, warnings: list[dict[str, str]]) -> JSONResponse:
    paused = store.is_paused(redis_of(request), workspace_id)
    body = {
        "success": True,
        "dry_run": True,
        "workspace_id": workspace_id,
        "diff": plan.diff.as_dict(),
        "jobs": [listed_job(t, workspace_paused=paused) for t in plan.triggers],
        "warnings": warnings,
    }
    return JSONResponse(body, headers={"ETag": quoted(plan.snapshot.etag)})


def etag_header(plan: Plan) -> dict[str, str]:
    """The ETag of the workspace as the write left it (no second read)."""
    return {"ETag": quoted(plan.etag)}
