"""Delivery history per workspace: one record per firing, newest first, and "run now".

Records are written by the workers and the scheduler (`scheduler_api.storage.firings`); this module
reads them for the API and creates manual firings. Retention, per workspace (each tenant gets
the original's per-queue guarantees, and one busy tenant cannot evict another's history):
delivered records are kept ``COMPLETED_KEEP_SECONDS`` and at most ``COMPLETED_KEEP_COUNT``;
failed, blocked and missed ones the last ``FAILED_KEEP_COUNT``; and at most
``HISTORY_MAX_PER_WORKSPACE`` records of any outcome (retrying ones included) in all.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from redis import Redis

from scheduler_api.storage import firings, keys
from scheduler_api.storage.triggers import StoredTrigger, redis_errors

OutcomeName = Literal["delivered", "failed", "retrying", "missed", "blocked"]


def list_records(
    conn: Redis,
    workspace_id: str,
    *,
    trigger: int | None = None,
    outcome: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The workspace's records, newest scheduled time first, filtered by trigger index and outcome."""
    with redis_errors():
        ids: list[bytes] = conn.zrevrange(keys.history(workspace_id), 0, -1)  # type: ignore[assignment]
        raws = conn.hmget(keys.records(workspace_id), ids) if ids else []
    job_id = keys.job_id(workspace_id, trigger) if trigger is not None else None
    out = []
    for raw in raws:
        if raw is None:
            continue
        record = json.loads(raw)
        if job_id is not None and record.get("jobId") != job_id:
            continue
        if outcome is not None and record.get("outcome") != outcome:
            continue
        out.append(record)
        if len(out) >= limit:
            break
    return out


def run_now(conn: Redis, trigger: StoredTrigger, *, now: float | None = None) -> str:
    """Fire `trigger` at once, outside its schedule; return the firing id.

    The firing has the same retries and headers as a scheduled one; its scheduled time is now
    (with milliseconds, so two manual runs in one second stay distinct). It goes to the outbox,
    which the next scheduler tick pushes to RQ.
    """
    ts = round(time.time() if now is None else now, 3)
    # Always with milliseconds, even .000: a scheduled firing's id has whole seconds only, so a
    # manual run never shares its id (and Idempotency-Key) with a scheduled one.
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    firing = firings.Firing(f"{trigger.job_id}@{stamp}", trigger.job_id, trigger.version, ts)
    with redis_errors():
        firings.enqueue_manual(conn, uuid.uuid4().hex, firing, now=ts)
    return firing.id
