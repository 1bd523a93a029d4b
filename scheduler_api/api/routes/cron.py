"""Cron expressions: validate one and show its next runs, storing nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scheduler_api.api.schemas import ERRORS, PreviewRequest, PreviewResponse
from scheduler_api.api.views import schedule_view

router = APIRouter()


@router.post(
    "/api/cron/preview",
    response_model=PreviewResponse,
    responses=ERRORS,
    summary="Validate a cron expression and show its next runs (after `after`, default now), storing nothing",
)
def preview(body: PreviewRequest) -> dict[str, Any]:
    after = body.after.timestamp() if body.after is not None else None
    parsed, description, runs = schedule_view(body.cron, body.timezone, path="", after=after)
    return {
        "success": True,
        "cron": body.cron,
        "timezone": parsed.tz,
        "description": description,
        "next_runs": runs,
    }
