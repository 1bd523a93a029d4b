"""The service's processes as the dashboard shows them: schedulers and workers with their last
heartbeat, and the depth of the delivery queue. Reads only, no SCAN.

* **Workers** are read from rq's worker registry: the set ``rq:workers`` of worker keys, and each
  worker's hash (``last_heartbeat``, ``state``: idle, busy, started, suspended; ``death`` once it
  stopped). A worker whose hash is gone (it died and its key expired) is left out; rq removes it
  from the set in its own maintenance.
* **Schedulers** register through rq-scheduler (scheduler_api.engine.scheduler.Registration): the
  hash ``sa:scheduler_instance:{name}``, whose TTL each heartbeat renews, gets ``death`` on a clean
  stop. rq-scheduler keeps no list of its instances, so each birth and heartbeat also scores the
  scheduler's name in ``sa:schedulers`` with the time (`scheduler_seen`). A scheduler is
  ``alive`` while its registration key holds no ``death``, ``stopped`` after a clean stop, and
  ``gone`` once the key expired without one (killed, or its heartbeats stopped); one not seen for
  `RECENT_SECONDS` is left out (and dropped from the set a day later).

Failure rules: `live_processes` and `queue_depth` raise Redis being unreachable, slow or refusing
as `StoreUnavailable` (the dashboard answers 503). `scheduler_seen` raises redis-py's errors
unchanged (the scheduler logs a failed heartbeat and carries on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis import Redis

from scheduler_api.storage import keys
from scheduler_api.storage.redis_util import redis_errors

RECENT_SECONDS = 600  # a scheduler not seen for this long is not shown
FORGET_SECONDS = 86_400  # and is dropped from sa:schedulers at another scheduler's birth after this
RQ_WORKERS = "rq:workers"  # rq's registry of every worker (rq.worker_registration.REDIS_WORKER_KEYS)


@dataclass(frozen=True)
class ProcessInfo:
    """One process: `role` 'scheduler' or 'worker', its name, its last heartbeat (unix seconds) and
    its state (a worker's rq state or 'stopped'; a scheduler's 'alive', 'stopped' or 'gone')."""

    role: str
    name: str
    last_heartbeat: float
    state: str


def scheduler_seen(conn: Redis, name: str, *, now: float, birth: bool = False) -> None:
    """Note that scheduler `name` is alive at `now` (its birth also forgets schedulers not seen for a day)."""
    pipe = conn.pipeline(transaction=False)
    pipe.zadd(keys.SCHEDULERS, {name: now})
    if birth:
        pipe.zremrangebyscore(keys.SCHEDULERS, "-inf", now - FORGET_SECONDS)
    pipe.execute()


def live_processes(conn: Redis, *, now: float) -> list[ProcessInfo]:
    """Schedulers seen in the last `RECENT_SECONDS`, then workers, each by name (two round trips)."""
    with redis_errors():
        pipe = conn.pipeline(transaction=False)
        pipe.zrangebyscore(keys.SCHEDULERS, now - RECENT_SECONDS, "+inf", withscores=True)
        pipe.smembers(RQ_WORKERS)
        schedulers, worker_keys = pipe.execute()
        worker_keys = sorted(k.decode() for k in worker_keys)
        pipe = conn.pipeline(transaction=False)
        for name, _ in schedulers:
            pipe.hmget(keys.SCHEDULER_INSTANCE_PREFIX + name.decode(), ["birth", "death"])
        for key in worker_keys:
            pipe.hmget(key, ["last_heartbeat", "state", "death", "birth"])
        answers = pipe.execute()
    found = []
    for (name, seen), (birth, death) in zip(schedulers, answers[: len(schedulers)], strict=True):
        state = "stopped" if death is not None else "alive" if birth is not None else "gone"
        found.append(ProcessInfo("scheduler", name.decode(), float(seen), state))
    for key, (heartbeat, state, death, birth) in zip(worker_keys, answers[len(schedulers) :], strict=True):
        if heartbeat is None and birth is None:
            continue  # its hash expired: rq's maintenance drops it from the registry
        last = _rq_time(heartbeat or birth)
        shown = "stopped" if death is not None else (state or b"?").decode()
        found.append(ProcessInfo("worker", key.removeprefix("rq:worker:"), last, shown))
    found.sort(key=lambda p: (p.role != "scheduler", p.name))
    return found


def _rq_time(raw: bytes) -> float:
    """rq's timestamps: ``2026-12-04T12:00:00.123456Z`` (UTC), or without the fraction."""
    text = raw.decode().removesuffix("Z")
    return datetime.fromisoformat(text + "+00:00").timestamp()


def queue_depth(conn: Redis, queue_name: str) -> int:
    """Batches waiting for a worker: RQ jobs queued plus batches in the outbox not yet pushed."""
    with redis_errors():
        pipe = conn.pipeline(transaction=False)
        pipe.llen(f"rq:queue:{queue_name}")
        pipe.zcard(keys.OUTBOX)
        pipe.hlen(keys.PUSHED)  # in the outbox until a worker claims them, but already in RQ's queue
        queued, outbox, pushed = pipe.execute()
    return int(queued) + max(int(outbox) - int(pushed), 0)
