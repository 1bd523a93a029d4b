"""The workspace page: its triggers, their state and last outcome; pause / resume the workspace, run
a trigger now, enable / disable and delete one. Each action is the API route's function
(scheduler_api.ui.calls); the page redirects back with a notice, or shows the API's error."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from scheduler_api import cron as cronlib
from scheduler_api.api.deps import redis_of
from scheduler_api.api.routes import settings as settings_routes
from scheduler_api.api.routes import triggers as trigger_routes
from scheduler_api.api.routes import workspaces as workspace_routes
from scheduler_api.errors import CronError
from scheduler_api.storage import history
from scheduler_api.storage import triggers as store
from scheduler_api.ui.calls import Failed, as_caller, call
from scheduler_api.ui.web import Page, checked_post, first, form_of, signed_in

router = APIRouter()
Form = Annotated[dict[str, list[str]], Depends(form_of)]
Signed = Annotated[Page, Depends(signed_in)]
NOTICES = {
    "paused": "The workspace is paused: its triggers keep their schedule but do not fire.",
    "resumed": "The workspace is resumed.",
    "run": "The trigger was queued to fire now; its delivery appears under Deliveries.",
    "enabled": "The trigger is enabled.",
    "disabled": "The trigger is disabled.",
    "deleted": "The trigger was deleted.",
    "saved": "The trigger was saved.",
    "created": "The trigger was created.",
    "settings": "The workspace settings were saved.",
    "rotated": "A new signing secret was made.",
    "replayed": "Replay queued.",
}


def describe(cron: str | None, timezone: str | None) -> str:
    if cron is None:
        return "Once"
    try:
        return cronlib.describe(cronlib.parse(cron, timezone or "UTC"))
    except CronError:
        return ""


def last_outcomes(page: Page, workspace_id: str) -> dict[str, dict[str, Any]]:
    """The newest record of each trigger, by jobId, among the workspace's last 500."""
    newest: dict[str, dict[str, Any]] = {}
    for record in history.list_records(redis_of(page.request), workspace_id, limit=500):
        newest.setdefault(record["jobId"], record)
    return newest


def render_workspace(page: Page, workspace_id: str, *, status: int = 200, **extra: Any) -> HTMLResponse:
    request = as_caller(page.request, page.session.scope)
    listed = call(trigger_routes.list_triggers, request, workspace_id=workspace_id)
    settings = call(settings_routes.get_settings, request, workspace_id=workspace_id)
    if isinstance(listed, Failed) or isinstance(settings, Failed):
        failed = listed if isinstance(listed, Failed) else settings
        assert isinstance(failed, Failed)
        return page.render("error.html", status=failed.status, message=failed.message)
    jobs = listed["jobs"]
    for job in jobs:
        job["description"] = describe(job.get("cron"), job.get("timezone"))
    notice = NOTICES.get(first({k: [v] for k, v in page.request.query_params.items()}, "done"))
    return page.render(
        "workspace.html",
        status=status,
        title=workspace_id,
        workspace_id=workspace_id,
        jobs=jobs,
        etag=listed.get("_etag", ""),
        paused=store.is_paused(redis_of(request), workspace_id),
        last=last_outcomes(page, workspace_id),
        settings=settings,
        notice=extra.pop("notice", notice),
        errors=extra.pop("errors", {}),
        **extra,
    )


@router.get("/ui/workspaces/{workspace_id}", response_class=HTMLResponse)
def workspace_page(workspace_id: str, page: Signed) -> HTMLResponse:
    return render_workspace(page, page.require(workspace_id))


def done(page: Page, workspace_id: str, answer: dict[str, Any] | Failed, notice: str) -> Response:
    """Back to the workspace with a notice; or the page again with the API's error."""
    if isinstance(answer, Failed):
        return render_workspace(page, workspace_id, status=answer.status, failed=answer, errors=answer.errors)
    return page.redirect(f"/ui/workspaces/{workspace_id}?done={notice}")


@router.post("/ui/workspaces/{workspace_id}/pause")
def pause(workspace_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    return done(page, workspace_id, call(workspace_routes.pause, request, workspace_id=workspace_id), "paused")


@router.post("/ui/workspaces/{workspace_id}/resume")
def resume(workspace_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    return done(page, workspace_id, call(workspace_routes.resume, request, workspace_id=workspace_id), "resumed")


@router.post("/ui/workspaces/{workspace_id}/triggers/{trigger_id}/run")
def run_now(workspace_id: str, trigger_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    answer = call(trigger_routes.run_now, request, workspace_id=workspace_id, trigger_id=trigger_id)
    return done(page, workspace_id, answer, "run")


@router.post("/ui/workspaces/{workspace_id}/triggers/{trigger_id}/{action}")
def switch(workspace_id: str, trigger_id: str, action: str, page: Signed, form: Form) -> Response:
    """enable, disable (a merge patch of `enabled`) or delete; If-Match: the ETag the page showed."""
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    if_match = first(form, "etag") or None
    ids = {"workspace_id": workspace_id, "trigger_id": trigger_id, "dry_run": False, "if_match": if_match}
    if action in ("enable", "disable"):
        answer = call(trigger_routes.patch_trigger, request, {"enabled": action == "enable"}, **ids)
        return done(page, workspace_id, answer, f"{action}d")
    if action == "delete":
        return done(page, workspace_id, call(trigger_routes.delete_trigger, request, **ids), "deleted")
    return page.render("error.html", status=404, message=f"There is no action {action!r}.")
