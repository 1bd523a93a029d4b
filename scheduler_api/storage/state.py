"""A trigger's firing state (``sa:state:{ws}``, written by the commit and record scripts), as the
API reads it.

Failure rule: Redis being unreachable, slow or refusing is raised as `StoreUnavailable` (503).
"""

from __future__ import annotations

from redis import Redis

from scheduler_api.storage import keys
from scheduler_api.storage.redis_util import redis_errors


def fired_count(conn: Redis, workspace_id: str, trigger_id: str) -> int:
    """Firings of the trigger counted toward its ``max_firings`` since its schedule last changed."""
    with redis_errors():
        raw = conn.hget(keys.state(workspace_id), keys.fired_field(trigger_id))
    return int(raw or 0)
