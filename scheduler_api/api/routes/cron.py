"""Cron expressions: validate one and show its next runs, storing nothing.

With ``jitter_seconds`` > 0 the runs shown are a trigger's real send times (each nominal run plus
the offset of its firing id ``{workspace_id}:{trigger_id}@{time}``, scheduler_api.policy), so
``workspace_id`` and ``trigger_id`` are required then (400 naming each one missing); the nominal
times are answered beside them in ``nominal_runs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scheduler_api import cron as cronlib
from scheduler_api.api.schemas import ERRORS, PreviewRequest, PreviewResponse
from scheduler_api.api.views import schedule_view, send_time
from scheduler_api.errors import InvalidRequest
from scheduler_api.storage import keys

router = APIRouter()


@router.post(
    "/api/cron/preview",
    response_model=PreviewResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    summary="Validate a cron expression and show its next runs (after `after`, default now), storing nothing",
)
def preview(body: PreviewRequest) -> dict[str, Any]:
    if body.jitter_seconds:
        missing = [name for name in ("workspace_id", "trigger_id") if getattr(body, name) is None]
        if missing:
            why = "is required with jitter_seconds: the offsets derive from the firing ids"
            raise InvalidRequest("Invalid request", [{"path": name, "message": why} for name in missing])
    after = body.after.timestamp() if body.after is not None else None
    parsed, description, runs = schedule_view(body.cron, body.timezone, path="", after=after)
    answer: dict[str, Any] = {"success": True, "cron": body.cron, "timezone": parsed.tz, "description": description}
    if not body.jitter_seconds:
        return answer | {"next_runs": [cronlib.iso(ts) for ts in runs]}
    job_id = keys.job_id(body.workspace_id or "", body.trigger_id or "")
    try:
        sent = [cronlib.iso(send_time(job_id, ts, body.jitter_seconds)) for ts in runs]
    except (ValueError, OverflowError):  # a send time past the end of year 9999
        raise InvalidRequest(
            "Invalid request", [{"path": "after", "message": "the send times would be past the year 9999"}]
        ) from None
    return answer | {"next_runs": sent, "nominal_runs": [cronlib.iso(ts) for ts in runs]}
