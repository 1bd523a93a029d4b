"""The engine in-process: tick the scheduler with an injected or the real clock, deliver what it
enqueued with a burst worker (`run_worker(burst=True)`), and read what was recorded."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq import Queue

from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, T, iso_second, once_cron
from tests.support.factories import WS
from tests.support.receiver import Received, Receiver, headers_of


def deliver(conn: Redis, settings: Settings) -> None:
    """Deliver every queued batch with a burst worker."""
    worker.run_worker(settings, conn, burst=True)


def tick_and_deliver(conn: Redis, settings: Settings, *nows: float) -> None:
    """Tick the scheduler at each `now` (an injected clock) and deliver what it enqueued."""
    queue = Queue(settings.queue_name, connection=conn)
    for now in nows:
        ticking.tick(conn, queue, settings, now=now)
        worker.run_worker(settings, conn, burst=True)


def fire_now(conn: Redis, queue: Queue, settings: Settings, triggers: list[Trigger], ws: str = WS) -> float:
    """Register `triggers` (their crons are ignored: each gets a cron matching one recent second)
    and tick with the real clock so each fires once; return that scheduled second."""
    due = math.floor(time.time()) - 1
    once = [t.model_copy(update={"cron": once_cron(due)}) for t in triggers]
    edits.replace(conn, ws, once, now=lambda: due - 0.5)
    result = ticking.tick(conn, queue, settings, now=time.time())
    assert result.fired == len(triggers)
    return due


def drive(conn: Redis, queue: Queue, settings: Settings, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Tick with the real clock and run the burst worker until `until()` holds."""
    deadline = time.monotonic() + timeout
    while True:
        ticking.tick(conn, queue, settings, now=time.time())
        deliver(conn, settings)
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def keep_driving(conn: Redis, queue: Queue, settings: Settings, seconds: float) -> None:
    """Tick with the real clock and deliver for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ticking.tick(conn, queue, settings, now=time.time())
        deliver(conn, settings)
        time.sleep(0.02)


def attempts(requests: list[Received]) -> list[int]:
    """The X-Scheduler-Attempt number of each request."""
    return [int(headers_of(r)["x-scheduler-attempt"]) for r in requests]


def record_of(conn: Redis, job_id: str, scheduled: float) -> dict[str, Any] | None:
    """The delivery record of the firing of `job_id` at the whole second `scheduled`."""
    return firings.get_record(conn, f"{job_id}@{iso_second(scheduled)}")


def is_final(conn: Redis, job_id: str, scheduled: float) -> bool:
    """The firing has a final record (a record says "retrying" while retries are pending)."""
    rec = record_of(conn, job_id, scheduled)
    return rec is not None and rec["outcome"] != "retrying"


def fire_ok_and_bad_once(conn: Redis, settings: Settings, ws: str, receiver: Receiver) -> None:
    """Give `ws` two triggers firing once at T + 1 (then next year), to `/{ws}/ok` and to `/{ws}/bad`
    (which answers 500), and tick and deliver that firing."""
    receiver.on(f"/{ws}/bad", (500, 0))
    triggers = [
        Trigger(cron=ONCE, url=f"{receiver.url}/{ws}/ok", method="GET"),
        Trigger(cron=ONCE, url=f"{receiver.url}/{ws}/bad", method="GET"),
    ]
    edits.replace(conn, ws, triggers, now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.5)
