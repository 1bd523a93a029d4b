"""Per-(workspace, host) rate limits through a real scheduler and two workers: the limit is decided
in Redis, so it holds across both. The receiver holds each request `HELD` seconds; in-flight counts
and one-second windows are counted at the receiver with a tolerance of `TOLERANCE` seconds (the
time between Redis granting a turn and the request's arrival varies by a few milliseconds).
"""

from __future__ import annotations

import math
import time

from redis import Redis

from scheduler_api.storage import edits, workspace_settings
from scheduler_api.storage.workspace_settings import RateLimit, WorkspaceSettings
from scheduler_api.triggers import Trigger
from tests.support.arrivals import most_in_flight, most_in_one_second
from tests.support.clock import once_cron
from tests.support.factories import WS
from tests.support.processes import Procs, records, start_scheduler, start_worker, wait_until
from tests.support.receiver import Receiver

HELD = 0.2
TOLERANCE = 0.05
COUNT = 30


def test_two_workers_share_the_limits_of_a_host_and_deliver_every_firing(
    conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    receiver.on("/limited", *[(200, HELD)] * COUNT)
    limit = RateLimit("127.0.0.1", per_second=10, concurrency=3)
    workspace_settings.write(conn, WS, WorkspaceSettings(rate_limits=(limit,)))
    start_scheduler(procs, conn, SCHEDULER_BATCH_SIZE="5")  # six batches: both workers take some
    workers = [start_worker(procs, conn) for _ in range(2)]
    due = math.floor(time.time()) + 2
    cron = once_cron(due)
    triggers = [Trigger(id=f"t{i}", cron=cron, url=receiver.url + "/limited", method="GET") for i in range(COUNT)]
    edits.replace(conn, WS, triggers)

    wait_until(lambda: len(receiver.to("/limited")) >= COUNT, 15, "every delivery", procs)
    wait_until(lambda: len(records(conn)) >= COUNT, 5, "every record", procs)
    sent = receiver.to("/limited")
    assert len(sent) == COUNT
    assert most_in_flight(sent, HELD - TOLERANCE) <= 3, procs.logs()
    assert most_in_one_second(sent, TOLERANCE) <= 10, procs.logs()
    recs = records(conn).values()
    assert all(r["outcome"] == "delivered" for r in recs), procs.logs()
    assert sum("waited_ms" in r["attempts"][0] for r in recs) >= COUNT - 3
    assert all("delivery workspace=" in w.log() for w in workers), "both workers delivered"
