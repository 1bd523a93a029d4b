"""What Redis holds for a workspace, to compare before and after a request.

A refused request must leave Redis exactly as it was, and a replace must keep one schedule entry per
trigger: the API cannot show either (a list read back looks the same after a partial write that was
undone, and the schedule is not exposed), so these read the storage keys (built by `keys`).
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from scheduler_api.storage import keys


def workspace_state(conn: Redis, ws: str) -> tuple[dict[bytes, bytes], list[tuple[bytes, float]]]:
    """The workspace's hash and the *whole* schedule, as Redis holds them."""
    return conn.hgetall(keys.workspace(ws)), conn.zrange(keys.SCHEDULE, 0, -1, withscores=True)


def every_key(conn: Redis) -> dict[bytes, Any]:
    """Every key of the service with its DUMP: nothing may change on a refused request. The
    per-minute call counters (``sa:rate:*``) are left out: a refused or dry-run call is still a call."""
    rates = keys.PREFIX.encode() + b"rate:"
    return {k: conn.dump(k) for k in sorted(conn.keys(keys.PREFIX + "*")) if not k.startswith(rates)}


def schedule_count(conn: Redis, ws: str) -> int:
    """The workspace's entries in the schedule: one per trigger."""
    return sum(1 for m in conn.zrange(keys.SCHEDULE, 0, -1) if m.decode().startswith(f"{ws}:"))


def history_counts(conn: Redis, ws: str) -> tuple[int, int]:
    """The workspace's delivery records and history entries (the two must stay equal)."""
    return conn.hlen(keys.records(ws)), conn.zcard(keys.history(ws))
