"""`scheduler_api.engine.outbox`: a committed batch becomes an RQ job, and is pushed again when its job
vanished or failed before taking it, never twice while it waits in the queue.
"""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue, SimpleWorker

from scheduler_api.delivery import dispatch as delivery
from scheduler_api.engine import tick as ticking
from scheduler_api.errors import SettingsError
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from tests.support.clock import ONCE, T, iso_second
from tests.support.engine import deliver
from tests.support.factories import WS, make_trigger
from tests.support.receiver import Receiver, scheduled_ats


def test_a_batch_whose_rq_job_vanished_is_pushed_again(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/v", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1
    queue.empty()  # the job is gone before any worker took it (an operator, a lost Redis write...)
    assert ticking.tick(conn, queue, settings, now=T + 20).pushed == 0  # not checked before 30 s
    with caplog.at_level("WARNING", logger="scheduler_api.scheduler"):
        assert ticking.tick(conn, queue, settings, now=T + 32).pushed == 1
    assert "pushing it again" in caplog.text
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1)]
    assert conn.zcard(keys.OUTBOX) == 0 and conn.hlen(keys.PUSHED) == 0 and not conn.keys(keys.BATCH_PREFIX + "*")


def test_a_batch_whose_rq_job_failed_before_taking_it_is_pushed_again(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the plain `rq worker`, a job that fails before claiming its batch (here: the worker's
    settings do not load) leaves the firing to the scheduler, which pushes it again."""
    edits.replace(conn, WS, [make_trigger(receiver.url + "/f", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1

    def broken() -> Settings:
        raise SettingsError("invalid settings: DELIVERY_TIMEOUT_SECONDS: ...")

    monkeypatch.setattr(delivery, "load_settings", broken)
    SimpleWorker([queue], connection=conn).work(burst=True)
    assert receiver.requests == [] and len(queue.failed_job_registry) == 1
    monkeypatch.undo()

    assert ticking.tick(conn, queue, settings, now=T + 32).pushed == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1)]
    rec = firings.get_record(conn, f"ws:0@{iso_second(T + 1)}")
    assert rec is not None and rec["outcome"] == "delivered"


def test_a_batch_still_queued_behind_others_is_not_pushed_twice(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/q", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1
    for now in (T + 32, T + 63, T + 94):  # no worker for a while: the job waits in RQ's queue
        assert ticking.tick(conn, queue, settings, now=now).pushed == 0
    assert queue.count == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1)]
    assert conn.zcard(keys.OUTBOX) == 0 and conn.hlen(keys.PUSHED) == 0
