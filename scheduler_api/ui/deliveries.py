"""The deliveries page: the workspace's history (the API's list), filtered by trigger, outcome and
time range, each record with its attempts; replay one firing, or every failed one in the filter
(the API's replay routes: the same quota and conflict rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from scheduler_api.api.routes import deliveries as delivery_routes
from scheduler_api.api.schemas import BulkReplayRequest
from scheduler_api.storage.history import OutcomeName
from scheduler_api.triggers import TRIGGER_ID
from scheduler_api.ui.calls import Failed, as_caller, call
from scheduler_api.ui.web import Page, checked_post, first, form_of, signed_in

router = APIRouter()
Form = Annotated[dict[str, list[str]], Depends(form_of)]
Signed = Annotated[Page, Depends(signed_in)]
OUTCOMES = get_args(OutcomeName)
SHOWN = 100


def instant(text: str) -> datetime | None:
    """An ISO 8601 time from the form (UTC when it names no offset); ValueError when it is none."""
    if not text.strip():
        return None
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def filters_of(trigger: str, outcome: str, since: str, until: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The filter's values, checked; errors by field name."""
    errors: dict[str, list[str]] = {}
    if trigger and not TRIGGER_ID.match(trigger):
        errors["trigger"] = ["1-64 characters of A-Z a-z 0-9 _ . -"]
    if outcome and outcome not in OUTCOMES:
        errors["outcome"] = [f"one of {', '.join(OUTCOMES)}"]
    times: dict[str, datetime | None] = {}
    for name, text in (("since", since), ("until", until)):
        try:
            times[name] = instant(text)
        except ValueError:
            errors[name] = ["an ISO 8601 time, e.g. 2026-01-31T09:00:00Z"]
    return {"trigger": trigger or None, "outcome": outcome or None, **times}, errors


def render(page: Page, workspace_id: str, filters: dict[str, str], *, status: int = 200, **extra: Any) -> HTMLResponse:
    checked, errors = filters_of(**filters)
    records: list[dict[str, Any]] = []
    if not errors:
        request = as_caller(page.request, page.session.scope)
        answer = call(
            delivery_routes.deliveries,
            request,
            workspace_id=workspace_id,
            trigger=checked["trigger"],
            outcome=checked["outcome"],
            limit=1000 if checked["since"] or checked["until"] else SHOWN,
        )
        if isinstance(answer, Failed):
            return page.render("error.html", status=answer.status, message=answer.message)
        since, until = checked["since"], checked["until"]
        for r in answer["deliveries"]:
            at = datetime.fromisoformat(r["scheduled_at"])
            if (since is None or at >= since) and (until is None or at <= until):
                records.append(r)
        records = records[:SHOWN]
    return page.render(
        "deliveries.html",
        status=status,
        title=f"Deliveries · {workspace_id}",
        workspace_id=workspace_id,
        records=records,
        filters=filters,
        errors=errors | extra.pop("errors", {}),
        outcomes=OUTCOMES,
        **extra,
    )


@router.get("/ui/workspaces/{workspace_id}/deliveries", response_class=HTMLResponse)
def deliveries_page(
    workspace_id: str,
    page: Signed,
    trigger: Annotated[str, Query(max_length=64)] = "",
    outcome: Annotated[str, Query(max_length=16)] = "",
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    done: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    page.require(workspace_id)
    filters = {"trigger": trigger, "outcome": outcome, "since": since, "until": until}
    notice = "Replay queued: its outcome appears here when it is delivered." if done == "replayed" else None
    return render(page, workspace_id, filters, notice=notice)


def _posted_filters(form: dict[str, list[str]]) -> dict[str, str]:
    return {name: first(form, name) for name in ("trigger", "outcome", "since", "until")}


def _back(
    page: Page, workspace_id: str, filters: dict[str, str], answer: dict[str, Any] | Failed, notice: str
) -> Response:
    if isinstance(answer, Failed):
        return render(page, workspace_id, filters, status=answer.status, failed=answer)
    query = urlencode({"done": notice} | {k: v for k, v in filters.items() if v})
    return page.redirect(f"/ui/workspaces/{workspace_id}/deliveries?{query}")


@router.post("/ui/workspaces/{workspace_id}/deliveries/replay-one")
def replay_one(workspace_id: str, page: Signed, form: Form) -> Response:
    checked_post(page, form, workspace_id)
    request = as_caller(page.request, page.session.scope)
    answer = call(delivery_routes.replay_one, request, workspace_id=workspace_id, firing_id=first(form, "firing_id"))
    return _back(page, workspace_id, _posted_filters(form), answer, "replayed")


@router.post("/ui/workspaces/{workspace_id}/deliveries/replay-failed")
def replay_failed(workspace_id: str, page: Signed, form: Form) -> Response:
    """Every failed record the filter selects (its trigger and time range), newest first, at most 1000."""
    checked_post(page, form, workspace_id)
    filters = _posted_filters(form)
    checked, errors = filters_of(**filters)
    if errors:
        return render(page, workspace_id, filters, status=400)
    request = as_caller(page.request, page.session.scope)
    body = {"outcome": "failed", "trigger": checked["trigger"], "limit": 1000}
    body |= {name: checked[name].isoformat() for name in ("since", "until") if checked[name] is not None}
    answer = call(
        lambda: delivery_routes.replay_matching(
            request, BulkReplayRequest.model_validate(body), workspace_id=workspace_id
        )
    )
    return _back(page, workspace_id, filters, answer, "replayed")
