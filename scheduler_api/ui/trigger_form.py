"""Add and edit a trigger: the form, its "Preview changes" (the API's dry run: diff, warnings, the
cron's description and next runs) and "Save" (the same call without dry_run, If-Match the ETag the
form was opened with). Editing is the API's JSON Merge Patch: a header whose value is left blank
keeps its stored value (values are never shown), "remove" drops it. A new trigger is the API's PUT
with If-None-Match: * (never replaces one). Also ``GET /ui/cron-preview``, the form's live preview.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from scheduler_api.api.routes import cron as cron_routes
from scheduler_api.api.routes import triggers as trigger_routes
from scheduler_api.api.schemas import PreviewRequest
from scheduler_api.triggers import TRIGGER_ID, Trigger
from scheduler_api.ui.calls import Failed, as_caller, call
from scheduler_api.ui.web import Page, checked_post, first, form_of, signed_in

router = APIRouter()
Form = Annotated[dict[str, list[str]], Depends(form_of)]
Signed = Annotated[Page, Depends(signed_in)]
TEXT = ("cron", "at", "timezone", "url", "method", "overlap", "start_at", "end_at")
NUMBERS = ("timeout_seconds", "max_firings", "jitter_seconds")
JSON_FIELDS = ("payload", "retry", "success", "final_statuses")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# A JSON field's text is refused beyond this (4x the default MAX_PAYLOAD_BYTES, room for indentation);
# the API's own limits then apply to what parses.
JSON_FIELD_CHARS = 262_144


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text  # the API's model says what is wrong with it


def fields_of(form: dict[str, list[str]]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The form's trigger fields (None for blank) and the JSON fields that do not parse (too long,
    nested too deeply or not JSON: each a field error, never an exception)."""
    values: dict[str, Any] = {}
    problems = []
    for name in TEXT:
        values[name] = first(form, name).strip() or None
    for name in NUMBERS:
        text = first(form, name).strip()
        values[name] = _number(text) if text else None
    for name in JSON_FIELDS:
        text = first(form, name).strip()
        if len(text) > JSON_FIELD_CHARS:
            problems.append(
                {"path": name, "message": f"must be at most {JSON_FIELD_CHARS} characters, got {len(text)}"}
            )
            continue
        try:
            values[name] = json.loads(text) if text else None
        except RecursionError:
            problems.append({"path": name, "message": "must be JSON nested fewer than 1000 levels deep"})
        except ValueError as e:
            problems.append({"path": name, "message": f"must be JSON: {e}"})
    values["enabled"] = first(form, "enabled") == "on"
    return values, problems


def header_changes(form: dict[str, list[str]]) -> dict[str, str | None]:
    """Headers the form changes: a typed value sets it, "remove" drops it (None); blank keeps it."""
    changes: dict[str, str | None] = {}
    removed = set(form.get("remove_header", []))
    for name, value in zip(form.get("old_name", []), form.get("old_value", []), strict=False):
        if name in removed:
            changes[name] = None
        elif value:
            changes[name] = value
    for name, value in zip(form.get("new_name", []), form.get("new_value", []), strict=False):
        if name.strip():
            changes[name.strip()] = value
    return changes


def form_values(form: dict[str, list[str]]) -> dict[str, str]:
    """What the form shows again after a preview or an error. Header values never: a new header's
    name comes back with an empty value and a hint to type the value again."""
    return {name: first(form, name) for name in (*TEXT, *NUMBERS, *JSON_FIELDS, "id", "etag", "enabled")}


def stored_values(job: dict[str, Any]) -> dict[str, str]:
    """A trigger as the API's GET shows it, as form values (header values are not there)."""
    out = {name: "" if job.get(name) is None else str(job[name]) for name in (*TEXT, *NUMBERS, "id")}
    for name in JSON_FIELDS:
        out[name] = "" if job.get(name) is None else json.dumps(job[name], indent=2)
    out["enabled"] = "on" if job.get("enabled", True) else ""
    return out


def schedule_preview(request: Any, values: dict[str, Any]) -> dict[str, Any] | Failed | None:
    if not values.get("cron"):
        return None
    body = {"cron": values["cron"], "timezone": values.get("timezone")}
    return call(lambda: cron_routes.preview(PreviewRequest.model_validate(body)))


def render_form(
    page: Page, workspace_id: str, *, status: int = 200, trigger_id: str | None, **context: Any
) -> HTMLResponse:
    context.setdefault("errors", {})
    context.setdefault("headers", [])
    title = f"{trigger_id} · {workspace_id}" if trigger_id else f"New trigger · {workspace_id}"
    return page.render(
        "trigger_form.html",
        status=status,
        title=title,
        workspace_id=workspace_id,
        trigger_id=trigger_id,
        methods=METHODS,
        **context,
    )


@router.get("/ui/workspaces/{workspace_id}/new-trigger", response_class=HTMLResponse)
def new_trigger(workspace_id: str, page: Signed) -> HTMLResponse:
    page.require(workspace_id)
    values = {"method": "POST", "enabled": "on", "cron": "*/5 * * * *"}
    return render_form(page, workspace_id, trigger_id=None, values=values)


@router.get("/ui/workspaces/{workspace_id}/triggers/{trigger_id}", response_class=HTMLResponse)
def edit_trigger(workspace_id: str, trigger_id: str, page: Signed) -> HTMLResponse:
    page.require(workspace_id)
    request = as_caller(page.request, page.session.scope)
    answer = call(trigger_routes.get_trigger, request, workspace_id=workspace_id, trigger_id=trigger_id)
    if isinstance(answer, Failed):
        return page.render("error.html", status=answer.status, message=answer.message)
    job = answer["job"]
    values = stored_values(job) | {"etag": answer.get("_etag", "")}
    schedule = {"description": job.get("description"), "next_runs": job.get("next_runs")}
    return render_form(
        page, workspace_id, trigger_id=trigger_id, values=values, headers=job["header_names"], schedule=schedule
    )


@router.post("/ui/workspaces/{workspace_id}/new-trigger", response_class=HTMLResponse)
def create_trigger(workspace_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    values, problems = fields_of(form)
    trigger_id = first(form, "id").strip()
    if not TRIGGER_ID.match(trigger_id) or len(trigger_id) > 64:
        problems.append({"path": "id", "message": "1-64 characters of A-Z a-z 0-9 _ . -, not dots only"})
    body = {k: v for k, v in values.items() if v is not None} | {"id": trigger_id}
    headers = {k: v for k, v in header_changes(form).items() if v is not None}
    if headers:
        body["headers"] = headers
    preview = first(form, "action") == "preview"

    def put() -> Any:
        return trigger_routes.put_trigger(
            request,
            Trigger.model_validate(body),
            workspace_id=workspace_id,
            trigger_id=trigger_id,
            dry_run=preview,
            if_match=None,
            if_none_match="*",
        )

    answer: dict[str, Any] | Failed = Failed(400, "Invalid request", problems) if problems else call(put)
    return _answered(page, workspace_id, None, form, values, answer, preview, "created", [])


@router.post("/ui/workspaces/{workspace_id}/triggers/{trigger_id}", response_class=HTMLResponse)
def save_trigger(workspace_id: str, trigger_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    values, problems = fields_of(form)
    patch: dict[str, Any] = dict(values)
    changes = header_changes(form)
    if changes:  # only then: the API refuses stored values following a url to another origin
        patch["headers"] = changes
    preview = first(form, "action") == "preview"
    answer: dict[str, Any] | Failed = (
        Failed(400, "Invalid request", problems)
        if problems
        else call(
            trigger_routes.patch_trigger,
            request,
            patch,
            workspace_id=workspace_id,
            trigger_id=trigger_id,
            dry_run=preview,
            if_match=first(form, "etag") or None,
        )
    )
    return _answered(page, workspace_id, trigger_id, form, values, answer, preview, "saved", form.get("old_name", []))


def _answered(
    page: Page,
    workspace_id: str,
    trigger_id: str | None,
    form: dict[str, list[str]],
    values: dict[str, Any],
    answer: dict[str, Any] | Failed,
    preview: bool,
    notice: str,
    headers: list[str],
) -> Response:
    if isinstance(answer, Failed) or preview:
        failed = answer if isinstance(answer, Failed) else None
        return render_form(
            page,
            workspace_id,
            status=failed.status if failed else 200,
            trigger_id=trigger_id,
            values=form_values(form),
            headers=headers,
            failed=failed,
            errors=failed.errors if failed else {},
            dry_run=None if failed else answer,
            schedule=schedule_preview(page.request, values),
            new_headers=[name for name in form.get("new_name", []) if name.strip()][:2],  # names only
        )
    return page.redirect(f"/ui/workspaces/{workspace_id}?done={notice}")


@router.get("/ui/cron-preview")
def cron_preview(page: Signed, cron: Annotated[str, Query(max_length=1000)], timezone: str = "") -> JSONResponse:
    """The API's cron preview for the form's script: description and next runs, or the error."""
    answer = schedule_preview(page.request, {"cron": cron, "timezone": timezone or None})
    if isinstance(answer, Failed) or answer is None:
        failed = answer or Failed(400, "Invalid request", [])
        return JSONResponse({"success": False, "error": failed.message, "details": failed.details}, status_code=400)
    return JSONResponse(answer)
