"""The workspace's settings form (alerts, auto-disable, rate limits) and its signing secret: shown
only after an explicit "reveal" POST, and once after "rotate". Both through the API's routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from scheduler_api.api.routes import settings as settings_routes
from scheduler_api.api.routes import signing as signing_routes
from scheduler_api.api.routes.settings import WorkspaceSettingsInput
from scheduler_api.ui.calls import Failed, as_caller, call
from scheduler_api.ui.web import Page, checked_post, first, form_of, signed_in
from scheduler_api.ui.workspace import done, render_workspace

router = APIRouter()
Form = Annotated[dict[str, list[str]], Depends(form_of)]
Signed = Annotated[Page, Depends(signed_in)]


def number(text: str, kind: type[int] | type[float]) -> Any:
    """`text` as a number for the API's strict model; unchanged when it is not one (the model names it)."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return text


def settings_document(form: dict[str, list[str]]) -> dict[str, Any]:
    """The form as the JSON body of ``PUT .../settings``; rows whose host is blank are left out."""
    url = first(form, "alerts_url").strip()
    after = number(first(form, "alerts_after"), int)
    alerts = {"url": url, "after_failures": 3 if after is None else after} if url else None  # blank: 3
    limits = []
    rows = zip(form.get("host", []), form.get("per_second", []), form.get("concurrency", []), strict=False)
    for host, per_second, concurrency in rows:
        if host.strip():
            limits.append(
                {"host": host, "per_second": number(per_second, float), "concurrency": number(concurrency, int)}
            )
    return {
        "alerts": alerts,
        "auto_disable_after_failures": number(first(form, "auto_disable"), int),
        "rate_limits": limits,
    }


@router.post("/ui/workspaces/{workspace_id}/settings")
def save_settings(workspace_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    document = settings_document(form)
    answer = call(
        lambda: settings_routes.put_settings(
            request,
            WorkspaceSettingsInput.model_validate(document),
            workspace_id=workspace_id,
            if_match=first(form, "settings_etag") or None,
        )
    )
    if isinstance(answer, Failed):
        return render_workspace(
            page, workspace_id, status=answer.status, failed=answer, errors=answer.errors, posted_settings=document
        )
    return done(page, workspace_id, answer, "settings")


@router.post("/ui/workspaces/{workspace_id}/signing/{action}")
def signing(workspace_id: str, action: str, page: Signed, form: Form) -> Response:
    """reveal (the secret, this once) or rotate (a new one, shown this once)."""
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    if action == "reveal":
        answer = call(signing_routes.get_secret, request, workspace_id=workspace_id)
    elif action == "rotate":
        answer = call(signing_routes.rotate_secret, request, workspace_id=workspace_id)
    else:
        return page.render("error.html", status=404, message=f"There is no action {action!r}.")
    if isinstance(answer, Failed):
        return done(page, workspace_id, answer, action)
    notice = (
        "A new signing secret was made; the previous one keeps signing for a while." if action == "rotate" else None
    )
    return render_workspace(page, workspace_id, secret=answer, notice=notice)
