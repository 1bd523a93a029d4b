"""The retention sweep: the scheduler applies retention to every workspace's history, also
to workspaces that get no new records (scheduler_api.storage.history.sweep).

A sweep starts every `RETENTION_SWEEP_SECONDS`; each poll of the scheduler runs one step of it,
between ticks: `SWEEP_STEP` workspaces, read from the indexes - the workspaces with triggers
(``sa:workspaces``, scheduler_api.storage.workspace_index) and then those whose last trigger was
removed (``sa:retired``, kept by the write script; a workspace leaves it when the sweep drops its
history or it gets triggers again). No step scans Redis's keys: a whole sweep costs what the number
of workspaces does, whatever else Redis holds. A workspace that joins or leaves an index during a
sweep may be visited twice or missed by that sweep; the next one visits it (and its records are
trimmed whenever it gets a new one anyway).

`backfill_retired` fills ``sa:retired`` once from the histories stored before it existed (one
SCAN, at the scheduler's start, marked done in ``sa:retired-built``).

Failure rule: a step that fails is logged by the caller and runs again at the next poll.
"""

from __future__ import annotations

from redis import Redis

from scheduler_api.settings import Settings
from scheduler_api.storage import firings, history, keys

RETENTION_SWEEP_SECONDS = 60.0  # a sweep over every workspace's history starts this often
SWEEP_STEP = 500  # workspaces swept per step


def sweep_step(conn: Redis, settings: Settings, *, now: float, cursor: int = 0) -> tuple[int, int]:
    """One step of the retention sweep (scheduler_api.storage.history.sweep): the workspaces at
    positions `cursor` .. of the indexes, taken one after the other; return (the cursor of the
    next step, 0 when the sweep is complete; histories dropped)."""
    live = int(conn.zcard(keys.WORKSPACES))
    if cursor < live:
        index, start = keys.WORKSPACES, cursor
    else:
        index, start = keys.RETIRED, cursor - live
    raw: list[bytes] = conn.zrange(index, start, start + SWEEP_STEP - 1)  # type: ignore[assignment]
    workspace_ids = [r.decode() for r in raw]
    retention = firings.Retention.from_settings(settings)
    dropped = history.sweep(conn, workspace_ids, now=now, retention=retention) if workspace_ids else 0
    following = cursor + len(workspace_ids)
    if index == keys.WORKSPACES and following >= live:
        following = live  # the retired ones next
        more = int(conn.zcard(keys.RETIRED)) > 0
    else:
        more = len(workspace_ids) == SWEEP_STEP
    # Dropped histories left sa:retired: the next page starts that many positions earlier.
    if index == keys.RETIRED:
        following -= dropped
    return (following if more else 0), dropped


def backfill_retired(conn: Redis) -> int | None:
    """Once per Redis: put the workspaces that have a history but no triggers into ``sa:retired``
    (histories written before the index existed). None when done before, else how many were added."""
    if conn.exists(keys.RETIRED_BUILT):
        return None
    added = 0
    prefix = keys.HISTORY_PREFIX
    batch: list[str] = []
    for raw in conn.scan_iter(match=prefix + "*", count=1000):
        batch.append((raw.decode() if isinstance(raw, bytes) else raw)[len(prefix) :])
        if len(batch) >= 1000:
            added += _retire(conn, batch)
            batch = []
    added += _retire(conn, batch)
    conn.set(keys.RETIRED_BUILT, "1")
    return added


def _retire(conn: Redis, workspace_ids: list[str]) -> int:
    if not workspace_ids:
        return 0
    pipe = conn.pipeline(transaction=False)
    for ws in workspace_ids:
        pipe.exists(keys.workspace(ws))
    orphans = [ws for ws, has in zip(workspace_ids, pipe.execute(), strict=True) if not has]
    if not orphans:
        return 0
    added: int = conn.zadd(keys.RETIRED, dict.fromkeys(orphans, 0))  # type: ignore[assignment]
    return added
