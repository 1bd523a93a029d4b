"""How a stored trigger and its schedule are shown in responses (the original's `jobs[]` shape,
plus the fields added beyond it)."""

from __future__ import annotations

import time
from typing import Any

from scheduler_api import cron as cronlib
from scheduler_api.errors import CronError, InvalidRequest
from scheduler_api.storage.triggers import StoredTrigger

NEXT_RUNS = 5


def job(t: StoredTrigger) -> dict[str, Any]:
    """A trigger as the original's POST answer shows it."""
    return {"jobId": t.job_id, "jobName": t.job_name, "cron": t.cron, "url": t.url, "method": t.method, "id": t.id}


def listed_job(t: StoredTrigger, *, workspace_paused: bool) -> dict[str, Any]:
    """A trigger as GET shows it: the original fields plus schedule state; header names only."""
    return {
        **job(t),
        "next_run_at": cronlib.iso(t.next_run_at) if t.next_run_at is not None else None,
        "header_names": sorted(t.headers),
        "has_payload": t.payload is not None,
        "timezone": t.timezone,
        "enabled": t.enabled,
        "paused": workspace_paused or not t.enabled,
    }


def schedule_view(
    cron: str, tz: str | None, *, path: str, new: bool = True, after: float | None = None
) -> tuple[cronlib.Cron, str, list[str]]:
    """(The parsed cron, its description, its next `NEXT_RUNS` run times after `after` or now).

    `new`: input, held to the rules for new input (`cron.validate`); else a stored definition.
    The zone is checked on its own, so an error is blamed on the field that caused it (a cron
    whose text happens to say "time zone" is still a cron error) and "" is refused as it is for
    a trigger's timezone. Raises `InvalidRequest` with `path` + the field in `details`.
    """
    field = "timezone"
    try:
        zone = "UTC" if tz is None else cronlib.check_timezone(tz)
        field = "cron"
        parsed = cronlib.validate(cron, zone) if new else cronlib.parse(cron, zone)
    except CronError as e:
        raise InvalidRequest("Invalid request", [{"path": f"{path}{field}", "message": str(e)}]) from None
    start = time.time() if after is None else after
    try:
        runs = [cronlib.iso(ts) for ts in parsed.next_runs(start, NEXT_RUNS)]
    except (CronError, OverflowError, ValueError) as e:  # no run before the end of the calendar
        raise InvalidRequest(
            "Invalid request", [{"path": f"{path}after", "message": f"no {NEXT_RUNS} run times after it: {e}"}]
        ) from None
    return parsed, cronlib.describe(parsed), runs
