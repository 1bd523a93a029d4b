"""Changes of a trigger while its firings wait: a retry of an older version does not hold back the
new version's firings under an overlap rule, and a jittered firing is not sent once its trigger
was disabled or its workspace paused while it waited."""

from __future__ import annotations

import math
import time

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.policy import jitter_offset
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T, iso_second
from tests.support.engine import deliver, record_of
from tests.support.factories import WS
from tests.support.receiver import Receiver


def test_a_retry_of_an_old_version_does_not_block_the_new_one(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    start = math.ceil(time.time()) + 1
    receiver.on("/x", (500, 0))
    trigger = {
        "cron": EVERY_SECOND,
        "url": receiver.url + "/x",
        "method": "GET",
        "overlap": "skip",
        "retry": {"backoff_seconds": 3600, "max_retries": 3},
    }
    edits.replace(conn, WS, [Trigger.model_validate(trigger)], now=lambda: start)
    ticking.tick(conn, queue, settings, now=start + 1.1)
    deliver(conn, settings)
    first = record_of(conn, f"{WS}:0", start + 1)
    assert first is not None and first["outcome"] == "retrying"  # active, waiting an hour for its retry
    # A new schedule: the waiting retry will be dropped unsent, so it holds nothing back.
    edits.replace(conn, WS, [Trigger.model_validate({**trigger, "cron": "*/1 * * * * *"})], now=lambda: start + 1.2)
    ticking.tick(conn, queue, settings, now=start + 2.1)
    deliver(conn, settings)
    second = record_of(conn, f"{WS}:0", start + 2)
    assert second is not None and second["outcome"] in ("delivered", "retrying"), second
    assert len(receiver.requests) == 2  # the first firing's attempt, then the new version's


def test_a_jittered_firing_disabled_while_it_waits_is_not_sent(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    tid = next(f"j{i}" for i in range(1000) if jitter_offset(f"{WS}:j{i}@{iso_second(T + 1)}", 600) >= 300)
    offset = jitter_offset(f"{WS}:{tid}@{iso_second(T + 1)}", 600)
    trigger = {"id": tid, "cron": "1 0 8 15 1 *", "url": receiver.url + "/x", "method": "GET", "jitter_seconds": 600}
    assert iso_second(T + 1).endswith("08:00:01Z")  # the cron's run time
    edits.replace(conn, WS, [Trigger.model_validate(trigger)], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.1)  # committed at its nominal time, sent `offset` later
    edits.replace(conn, WS, [Trigger.model_validate({**trigger, "enabled": False})], now=lambda: T + 2)
    ticking.tick(conn, queue, settings, now=T + 1 + offset + 0.1)
    deliver(conn, settings)
    assert receiver.requests == []
    assert conn.hlen(keys.batch("x")) == 0 and conn.zcard(keys.OUTBOX) == 0
