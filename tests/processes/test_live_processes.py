"""`scheduler_api.storage.processes.live_processes` with a real `scheduler-api scheduler` and
`scheduler-api worker`: both listed with their heartbeats while they run, and a clean stop shown."""

from __future__ import annotations

import time

from redis import Redis

from scheduler_api.storage import processes
from tests.support.processes import Procs, start_scheduler, start_worker, stop, wait_until


def by_role(conn: Redis) -> dict[str, list[processes.ProcessInfo]]:
    found: dict[str, list[processes.ProcessInfo]] = {"scheduler": [], "worker": []}
    for p in processes.live_processes(conn, now=time.time()):
        found[p.role].append(p)
    return found


def test_a_running_scheduler_and_worker_are_listed_then_a_stopped_one_is_shown_stopped(
    procs: Procs, conn: Redis
) -> None:
    started = time.time()
    scheduler = start_scheduler(procs, conn)
    worker = start_worker(procs, conn)
    found = by_role(conn)
    assert [p.state for p in found["scheduler"]] == ["alive"]
    assert len(found["worker"]) == 1 and found["worker"][0].state in ("idle", "started", "busy")
    beats = [p.last_heartbeat for p in found["scheduler"] + found["worker"]]
    assert all(started - 1 <= b <= time.time() + 1 for b in beats), (started, beats, time.time())
    first_beat = found["scheduler"][0].last_heartbeat
    wait_until(lambda: by_role(conn)["scheduler"][0].last_heartbeat > first_beat, 10, "a scheduler heartbeat", procs)
    assert stop(scheduler, procs) == 0
    assert stop(worker, procs) == 0
    found = by_role(conn)
    assert [p.state for p in found["scheduler"]] == ["stopped"]
    assert found["worker"] == []  # rq takes a stopped worker out of its registry
