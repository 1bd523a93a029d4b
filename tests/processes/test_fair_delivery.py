"""Fair delivery through a real scheduler and worker (issue #17, the short noisy-neighbour case):
workspace `noisy` has many per-second triggers to an endpoint that holds each request `HELD`
seconds; the quiet workspaces' per-second triggers go to a fast one. The quiet firings must all
arrive on time while the noisy ones fill their workspace's lanes (WORKER_CONCURRENCY in flight,
never more), and no noisy firing may be lost: each is delivered, or waiting in a batch."""

from __future__ import annotations

import math
import time

import pytest
from redis import Redis

from scheduler_api import cron as cronlib
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.arrivals import most_in_flight
from tests.support.processes import Procs, header, records, start_scheduler, start_worker, wait_until
from tests.support.receiver import Receiver

HELD = 1.5
CAP = 3  # WORKER_CONCURRENCY: requests of one workspace in flight in the worker
NOISY = 25
QUIET = {"quiet-a": 3, "quiet-b": 2}
SECONDS = 10


def firing_id(workspace: str, trigger: str, second: float) -> str:
    return f"{workspace}:{trigger}@{cronlib.iso(second)}"


@pytest.mark.slow
def test_a_noisy_workspace_fills_only_its_own_lanes_and_the_others_stay_on_time(
    conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    receiver.on("/slow", *[(200, HELD)] * 10_000)
    edits.replace(
        conn,
        "noisy",
        [Trigger(id=f"n{i}", cron="* * * * * *", url=receiver.url + "/slow", method="POST") for i in range(NOISY)],
    )
    for ws, count in QUIET.items():
        triggers = [
            Trigger(id=f"q{i}", cron="* * * * * *", url=f"{receiver.url}/fast/{ws}/{i}", method="POST")
            for i in range(count)
        ]
        edits.replace(conn, ws, triggers)
    start_scheduler(procs, conn)
    start_worker(procs, conn, WORKER_CONCURRENCY=str(CAP), DELIVERY_TIMEOUT_SECONDS="5")
    first = math.floor(time.time()) + 3  # measured from here: the processes have started by then
    last = first + SECONDS - 1
    wait_until(lambda: time.time() > last + 2.0, SECONDS + 10, "the measured seconds", procs)

    arrived: dict[str, float] = {}
    for r in receiver.requests:
        arrived.setdefault(header(r, "Idempotency-Key") or "", r.at)
    lateness = []
    for ws, count in QUIET.items():
        for i in range(count):
            for second in range(first, last + 1):
                fid = firing_id(ws, f"q{i}", second)
                assert fid in arrived, f"{fid} never arrived\n{procs.logs()}"
                lateness.append(arrived[fid] - second)
    assert max(lateness) < 1.0, (sorted(lateness)[-5:], procs.logs())

    slow = receiver.to("/slow")
    assert most_in_flight(slow, HELD - 0.1) == CAP, procs.logs()  # saturated, never beyond its cap
    in_batches = {k.decode() for name in conn.scan_iter(match=keys.PREFIX + "batch:*") for k in conn.hkeys(name)}
    recorded = records(conn, "noisy")
    noisy_due = [firing_id("noisy", f"n{i}", s) for s in range(first, last + 1) for i in range(NOISY)]
    lost = [f for f in noisy_due if f not in arrived and f not in in_batches and f not in recorded]
    assert lost == [], procs.logs()
    assert sum(f in in_batches for f in noisy_due) > NOISY * SECONDS / 2  # the backlog waits, not dropped
    parked = [r for r in recorded.values() if r["attempts"] and "queued_ms" in r["attempts"][0]]
    assert parked and all(r["attempts"][0]["queued_ms"] > 0 for r in parked)  # recorded as delayed
