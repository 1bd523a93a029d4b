"""`scheduler_api.engine.scheduler`: the scheduler process's loop, in-process: it survives Redis refusing
writes and a failing tick, and runs the retention sweep.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.embedded_redis import RedisServer
from scheduler_api.engine import scheduler as scheduling
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from tests.support.api import deliveries
from tests.support.clock import ONCE, T
from tests.support.engine import fire_ok_and_bad_once
from tests.support.factories import WS, make_engine_settings, make_settings, make_trigger
from tests.support.receiver import Receiver


def test_the_scheduler_loop_survives_redis_refusing_writes(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Out of memory under `noeviction` (DEPLOYMENT.md): every write is refused, from the
    registration and the heartbeat to the tick's metrics; the loop logs and keeps going."""
    with RedisServer() as server:
        own = Redis.from_url(server.url)
        settings = make_engine_settings(server.url)
        edits.replace(own, WS, [make_trigger("https://example.com/", ONCE)], now=lambda: T)
        own.config_set("maxmemory", 1)
        sched = scheduling.TriggerScheduler(settings, connection=own, clock=lambda: T + 1.3)
        with caplog.at_level("ERROR", logger="scheduler_api.scheduler"):
            sched.run(burst=True)  # returns: no OutOfMemoryError escapes
        assert "maxmemory" in caplog.text  # "OOM command not allowed when used memory > 'maxmemory'"
        own.config_set("maxmemory", 0)
        sched.stopping = False
        sched.run(burst=True)  # memory back: the due firing is committed
        assert own.zcard(keys.OUTBOX) == 1
        own.close()


def test_the_scheduler_process_survives_a_failing_tick(
    conn: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(scheduling, "tick", refused)
    sched = scheduling.TriggerScheduler(settings, connection=conn, clock=lambda: T)
    with caplog.at_level("ERROR", logger="scheduler_api.scheduler"):
        assert sched.enqueue_jobs() == ticking.TickResult()
    assert "tick failed" in caplog.text and "OOM" in caplog.text


def test_the_scheduler_process_loop_runs_the_sweep(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    fire_ok_and_bad_once(conn, settings, "gone", receiver)
    edits.delete(conn, "gone")
    later = time.time() + 3601
    scheduling.TriggerScheduler(settings, connection=conn, clock=lambda: later).run(burst=True)
    assert deliveries(client, ws="gone") == []
