"""`scheduler_api.storage.processes`: a scheduler whose registration expired is shown gone and
then left out, and the queue depth counts each waiting batch once (RQ queue plus outbox)."""

from __future__ import annotations

import time

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.engine.scheduler import Registration
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, processes
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, T
from tests.support.engine import deliver
from tests.support.processes import wait_until
from tests.support.receiver import Receiver


def test_a_scheduler_whose_registration_expired_is_gone_then_forgotten(conn: Redis, settings: Settings) -> None:
    registration = Registration(queue_name=settings.queue_name, interval=1, connection=conn)
    registration.register_birth()
    now = time.time()
    [alive] = processes.live_processes(conn, now=now)
    assert (alive.role, alive.name, alive.state) == ("scheduler", registration.name, "alive")
    conn.pexpire(registration.key, 1)  # its heartbeats stop: the key runs out
    wait_until(lambda: not conn.exists(registration.key), 5, "the registration to expire")
    [gone] = processes.live_processes(conn, now=now)
    assert gone.state == "gone" and gone.last_heartbeat == alive.last_heartbeat
    assert processes.live_processes(conn, now=now + processes.RECENT_SECONDS + 1) == []


def test_the_queue_depth_counts_a_pushed_batch_once(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    assert processes.queue_depth(conn, settings.queue_name) == 0
    edits.replace(conn, "ws", [Trigger(cron=ONCE, url=receiver.url + "/x", method="GET")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)  # one batch, in the outbox and pushed to RQ
    assert processes.queue_depth(conn, settings.queue_name) == 1
    deliver(conn, settings)
    assert processes.queue_depth(conn, settings.queue_name) == 0 and len(receiver.requests) == 1
