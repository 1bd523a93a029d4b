"""The retention sweep: the scheduler applies retention to every workspace's history, also
to workspaces that get no new records (scheduler_api.storage.history.sweep).

A sweep over every workspace with a history starts every `RETENTION_SWEEP_SECONDS`; each poll of
the scheduler runs one step of it (`SWEEP_SCAN_COUNT` keys looked at), between ticks.
Failure rule: a step that fails is logged by the caller and runs again at the next poll.
"""

from __future__ import annotations

from redis import Redis

from scheduler_api.settings import Settings
from scheduler_api.storage import firings, history, keys

RETENTION_SWEEP_SECONDS = 60.0  # a sweep over every workspace's history starts this often
SWEEP_SCAN_COUNT = 2000  # keys looked at per sweep step


def sweep_step(conn: Redis, settings: Settings, *, now: float, cursor: int = 0) -> tuple[int, int]:
    """One step of the retention sweep (scheduler_api.storage.history.sweep) over the workspaces with a
    history; return (the cursor of the next step, 0 when the sweep is complete; histories dropped)."""
    cursor, found = conn.scan(cursor, match=keys.HISTORY_PREFIX + "*", count=SWEEP_SCAN_COUNT)
    n = len(keys.HISTORY_PREFIX)
    workspace_ids = [(k.decode() if isinstance(k, bytes) else k)[n:] for k in found]
    retention = firings.Retention.from_settings(settings)
    dropped = history.sweep(conn, workspace_ids, now=now, retention=retention) if workspace_ids else 0
    return int(cursor), dropped
