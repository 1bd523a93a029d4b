"""How a stored trigger and its schedule are shown in responses (the original's `jobs[]` shape,
plus the fields added beyond it).

Rules of the views:
* ``state``: ``ended`` (a one-off that has fired, or a trigger past its ``end_at`` or
  ``max_firings``: no schedule entry left), else ``disabled`` (``enabled: false``), else ``paused``
  (its workspace is paused), else ``active``;
* a one-off trigger shows ``"cron": null`` and its ``at`` (ISO 8601 UTC); a cron trigger shows no ``at``;
* the listed views show the policy fields that are set, with the input's names (times in ISO 8601
  UTC), and nothing for those left at their defaults;
* an auto-disabled trigger (scheduler_api.storage.workspace_settings) also shows ``disabled_reason``
  and ``disabled_at`` while it stays disabled;
* run times shown (``next_run_at``, ``next_runs``) are when a firing is really sent: its nominal time
  plus the trigger's jitter offset (scheduler_api.policy.jitter_offset of its firing id), within
  ``start_at`` / ``end_at``; the one-trigger view's ``next_runs`` also stop after the firings
  ``max_firings`` leaves (an ended trigger shows none).
"""

from __future__ import annotations

import time
from typing import Any

from scheduler_api import cron as cronlib
from scheduler_api.errors import CronError, InvalidRequest
from scheduler_api.policy import jitter_offset, next_run
from scheduler_api.storage.triggers import StoredTrigger

NEXT_RUNS = 5
_TIMES = ("start_at", "end_at")


def send_time(job_id: str, nominal: float, jitter_seconds: int) -> float:
    """When the firing of `job_id` due at `nominal` is sent: nominal + its jitter offset."""
    if not jitter_seconds:
        return nominal
    return nominal + jitter_offset(f"{job_id}@{cronlib.iso(nominal)}", jitter_seconds)


def state(t: StoredTrigger, *, workspace_paused: bool) -> str:
    """active, paused, disabled or ended (module docstring)."""
    p = t.policy
    bounded = t.at is not None or (p is not None and (p.end_at is not None or p.max_firings is not None))
    past_end = p is not None and p.end_at is not None and t.next_run_at is not None and t.next_run_at > p.end_at
    if (t.next_run_at is None and bounded) or past_end:
        return "ended"
    if not t.enabled:
        return "disabled"
    return "paused" if workspace_paused else "active"


def job(t: StoredTrigger, *, workspace_paused: bool) -> dict[str, Any]:
    """A trigger as the original's POST answer shows it, with its state (and `at` for a one-off)."""
    out: dict[str, Any] = {"jobId": t.job_id, "jobName": t.job_name, "cron": t.cron}
    if t.at is not None:
        out["at"] = cronlib.iso(t.at)
    out |= {"url": t.url, "method": t.method, "id": t.id, "state": state(t, workspace_paused=workspace_paused)}
    return out


def policy_view(t: StoredTrigger) -> dict[str, Any]:
    """The policy fields that are set, as a client writes them (times in ISO 8601 UTC)."""
    if t.policy is None:
        return {}
    out = t.policy.to_dict()
    for name in _TIMES:
        if name in out:
            out[name] = cronlib.iso(out[name])
    return out


def listed_job(t: StoredTrigger, *, workspace_paused: bool) -> dict[str, Any]:
    """A trigger as GET shows it: the original fields plus schedule state and policy; header names only."""
    sent = send_time(t.job_id, t.next_run_at, t.jitter_seconds) if t.next_run_at is not None else None
    return {
        **job(t, workspace_paused=workspace_paused),
        "next_run_at": cronlib.iso(sent) if sent is not None else None,
        "header_names": sorted(t.headers),
        "has_payload": t.payload is not None,
        "timezone": t.timezone,
        "enabled": t.enabled,
        "paused": workspace_paused or not t.enabled,
        **policy_view(t),
        **disabled_view(t),
    }


def disabled_view(t: StoredTrigger) -> dict[str, Any]:
    """An auto-disabled trigger's ``disabled_reason`` and ``disabled_at`` (ISO 8601 UTC), while it
    stays disabled; nothing for any other trigger."""
    # (reason, unix time) as the record script stored it in the definition's "off" member.
    off = None if t.enabled else t.disabled
    if not off:
        return {}
    reason, at = off
    return {"disabled_reason": reason, "disabled_at": cronlib.iso(at)}


def trigger_schedule(t: StoredTrigger, *, fired: int = 0, after: float | None = None) -> tuple[str, list[str]]:
    """(A stored trigger's schedule in words, its next `NEXT_RUNS` send times after `after` or now,
    within its bounds and the `max_firings` left after `fired`; none once it has ended)."""
    start = time.time() if after is None else after
    ended = state(t, workspace_paused=False) == "ended"
    if t.cron is None:
        at = t.at if t.at is not None else 0.0
        description = f"Once, at {cronlib.iso(at)}"
        upcoming = [] if ended else [at]
    else:
        parsed = cronlib.parse(t.cron, t.timezone)
        description = cronlib.describe(parsed)
        upcoming = []
        left = NEXT_RUNS if t.max_firings is None else min(NEXT_RUNS, t.max_firings - fired)
        nxt = None if ended else next_run(parsed, None, t.policy, start)
        while nxt is not None and len(upcoming) < left:
            upcoming.append(nxt)
            nxt = next_run(parsed, None, t.policy, nxt)
    return description, [cronlib.iso(send_time(t.job_id, ts, t.jitter_seconds)) for ts in upcoming]


def schedule_view(
    cron: str, tz: str | None, *, path: str, new: bool = True, after: float | None = None
) -> tuple[cronlib.Cron, str, list[float]]:
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
        runs = parsed.next_runs(start, NEXT_RUNS)
        for ts in runs:
            cronlib.iso(ts)  # each can be shown
    except (CronError, OverflowError, ValueError) as e:  # no run before the end of the calendar
        raise InvalidRequest(
            "Invalid request", [{"path": f"{path}after", "message": f"no {NEXT_RUNS} run times after it: {e}"}]
        ) from None
    return parsed, cronlib.describe(parsed), runs
