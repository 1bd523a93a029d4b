"""The index of workspaces (``sa:workspaces``), so that listing them never scans Redis keys.

A workspace *exists* while it has triggers (its hash ``sa:ws:{id}`` is not empty): ``write.lua``
adds its id to the index in the write that leaves it with triggers and removes it in the write
that removes its last one, so the index is exact after every write. Settings, a signing secret, a
pause flag or a history alone do not make a workspace listed (they outlive its triggers; the
history goes with the retention sweep). The index is a sorted set with every score 0, so Redis
keeps it in the ids' byte order and a prefix is a lex range (ZRANGEBYLEX, ZLEXCOUNT).

Workspaces written before the index existed are added by `backfill` (one SCAN of ``sa:ws:*``), run
by `scheduler-api serve` at start-up when the index is absent; writes keep the index whether or not
it was backfilled. The ids are collected first and added at the end, so an interrupted backfill
(rare: only its last few round trips) can leave a partial index; deleting ``sa:workspaces`` and
starting the API again rebuilds it (so does an upgrade whose older API replicas kept writing
without the index).

`summaries` reads what the dashboard shows of a page of workspaces in two round trips.

Failure rules: every function raises Redis being unreachable, slow or refusing as
`StoreUnavailable` (the API and the dashboard answer 503). `page` raises ValueError for a `limit`
below 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from scheduler_api.storage import keys, scripts, series
from scheduler_api.storage.redis_util import redis_errors

_SCAN_COUNT = 1000
_LAST = b"\xff"  # above every byte of a workspace id (A-Z a-z 0-9 _ . -): the end of a prefix's range


def page(conn: Redis, *, prefix: str = "", after: str | None = None, limit: int = 50) -> list[str]:
    """Up to `limit` workspace ids starting with `prefix`, in byte order, strictly after `after`."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    start = b"[" + prefix.encode()
    if after is not None and after >= prefix:
        start = b"(" + after.encode()
    with redis_errors():
        found: list[bytes] = conn.zrangebylex(keys.WORKSPACES, start, _end(prefix), start=0, num=limit)  # type: ignore[assignment]
    return [raw.decode() for raw in found]


def count(conn: Redis, *, prefix: str = "") -> int:
    """How many workspaces start with `prefix`."""
    with redis_errors():
        return int(conn.zlexcount(keys.WORKSPACES, b"[" + prefix.encode(), _end(prefix)))


def _end(prefix: str) -> bytes:
    return b"[" + prefix.encode() + _LAST if prefix else b"+"


@dataclass(frozen=True)
class WorkspaceSummary:
    """What the workspace list shows of one workspace.

    `failing`: triggers whose consecutive failed firings (``{id}!`` in ``sa:state:{ws}``) are above
    0 - counted only for a workspace with alerts or auto-disable set (storage.workspace_settings).
    `delivered_24h` / `failed_24h`: final outcomes (failed includes blocked) in the current hour and
    the 23 before it (storage.series: hourly counters). `next_run`: the earliest schedule entry of its
    triggers (a disabled trigger keeps its entry; a paused workspace's entries are shown too)."""

    triggers: int
    paused: bool
    failing: int
    delivered_24h: int
    failed_24h: int
    next_run: float | None


def summaries(conn: Redis, ids: list[str], *, now: float) -> dict[str, WorkspaceSummary]:
    """The summary of each of `ids` (a workspace without triggers reads as zeros), in two round trips."""
    if not ids:
        return {}
    hours = series.day_hours(now)
    with redis_errors():
        pipe = conn.pipeline(transaction=False)
        for ws in ids:
            pipe.hkeys(keys.workspace(ws))
            pipe.hgetall(keys.state(ws))
        pipe.smismember(keys.PAUSED, ids)
        fields = [name for ws in ids for name in series.workspace_fields(ws)]
        for hour in hours:
            pipe.hmget(keys.workspace_day(hour), fields)
        first = pipe.execute()
        trigger_ids: list[list[bytes]] = first[0 : 2 * len(ids) : 2]
        pipe = conn.pipeline(transaction=False)
        for ws, triggers in zip(ids, trigger_ids, strict=True):
            if triggers:
                pipe.zmscore(keys.SCHEDULE, [keys.job_id(ws, t.decode()) for t in triggers])
        scores = iter(pipe.execute())
    states: list[dict[bytes, bytes]] = first[1 : 2 * len(ids) : 2]
    paused: list[int] = first[2 * len(ids)]
    totals = [0] * len(fields)
    for counted in first[2 * len(ids) + 1 :]:
        for i, raw in enumerate(counted):
            if raw is not None:
                totals[i] += int(raw)
    out = {}
    for i, ws in enumerate(ids):
        runs = [s for s in next(scores) if s is not None] if trigger_ids[i] else []
        failing = sum(1 for k, v in states[i].items() if k.endswith(b"!") and int(v) > 0)
        out[ws] = WorkspaceSummary(
            triggers=len(trigger_ids[i]),
            paused=bool(paused[i]),
            failing=failing,
            delivered_24h=totals[2 * i],
            failed_24h=totals[2 * i + 1],
            next_run=min(runs) if runs else None,
        )
    return out


def backfill(conn: Redis) -> int | None:
    """Add every stored workspace with triggers to the index when the index is absent: None if it
    exists, else how many were added. One SCAN of ``sa:ws:*`` (module docstring)."""
    with redis_errors():
        if conn.exists(keys.WORKSPACES):
            return None
        found = [raw.decode() for raw in conn.scan_iter(match=keys.WORKSPACE_PREFIX + "*", count=_SCAN_COUNT)]
        ids = [key.removeprefix(keys.WORKSPACE_PREFIX) for key in found]
        return sum(_add_existing(conn, ids[i : i + _SCAN_COUNT]) for i in range(0, len(ids), _SCAN_COUNT))


def _add_existing(conn: Redis, workspace_ids: list[str]) -> int:
    if not workspace_ids:
        return 0
    script_keys = [keys.WORKSPACES, *map(keys.workspace, workspace_ids)]
    return int(scripts.run(conn, "index_backfill", script_keys, workspace_ids))


def scope_ids(conn: Redis, scope: str) -> list[str]:
    """The workspace ids an API key scope covers (``*``, ``prefix*`` or one name) that have
    triggers, from the index (backfilled first when absent)."""
    backfill(conn)
    if not scope.endswith("*"):
        with redis_errors():
            return [scope] if conn.zscore(keys.WORKSPACES, scope) is not None else []
    prefix = scope[:-1]
    with redis_errors():
        found: list[bytes] = conn.zrangebylex(keys.WORKSPACES, b"[" + prefix.encode(), _end(prefix))  # type: ignore[assignment]
    return [raw.decode() for raw in found]
