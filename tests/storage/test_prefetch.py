"""scheduler_api.storage.prefetch: what an idle worker or scheduler parses ahead of due times.

Prefetching only fills caches, so these tests watch what it parses (through its `warm` hook and
the caches themselves) and that it stays out of the way: only entries due within the lookahead,
once per due time, never while the process is busy, never raising.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.delivery import attempt as sending
from scheduler_api.delivery import http as transport
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.engine import scheduler as scheduling
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import connection, edits, prefetch
from scheduler_api.storage import triggers as store
from scheduler_api.storage.prefetch import Prefetcher
from scheduler_api.storage.triggers import StoredTrigger
from scheduler_api.triggers import Trigger
from tests.support.clock import T
from tests.support.factories import make_engine_settings


def _trigger(cron: str, i: int = 0) -> Trigger:
    return Trigger(cron=cron, url=f"http://127.0.0.1:9/hook/{i}", method="POST", payload={"i": i})


def _register(conn: Redis) -> None:
    """ws `soon`: two triggers due at T+5 (second 5 of each minute); ws `later`: one due in hours."""
    edits.replace(conn, "soon", [_trigger("5 * * * * *", 0), _trigger("5 * * * * *", 1)], now=lambda: T)
    edits.replace(conn, "later", [_trigger("0 0 * * *")], now=lambda: T)


def _collector() -> tuple[list[str], Any]:
    seen: list[str] = []
    return seen, lambda trigger: seen.append(trigger.job_id)


def test_parses_only_what_is_due_within_the_lookahead_once_per_due_time(conn: Redis) -> None:
    _register(conn)
    seen, warm = _collector()
    p = Prefetcher(conn, lookahead=10, warm=warm)
    assert p.run_once(T) == 2
    assert sorted(seen) == ["soon:0", "soon:1"]
    assert p.run_once(T + 1) == 0  # same due time: already done
    assert Prefetcher(conn, lookahead=3, warm=warm).run_once(T) == 0  # T+5 is beyond 3 s

    # Once the entries move on to their next due time (T+65), they are prefetched again for it.
    settings = make_engine_settings("redis://unused")
    ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=T + 5.01)
    seen.clear()
    assert p.run_once(T + 60) == 2 and sorted(seen) == ["soon:0", "soon:1"]


def test_zero_lookahead_turns_it_off(conn: Redis) -> None:
    _register(conn)
    seen, warm = _collector()
    assert Prefetcher(conn, lookahead=0, warm=warm).run_once(T) == 0
    assert seen == []


def test_a_busy_process_stops_the_pass_between_chunks(conn: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefetch, "CHUNK", 2)
    triggers = [_trigger("5 * * * * *", i) for i in range(6)]
    edits.replace(conn, "ws", triggers, now=lambda: T)
    seen, warm = _collector()
    asked = iter([False, True])  # idle for the first chunk, busy before the second
    p = Prefetcher(conn, lookahead=10, warm=warm, busy=lambda: next(asked, True))
    assert p.run_once(T) == 2 and len(seen) == 2
    # The entries not reached are still to do: the next idle pass takes them.
    p.busy = lambda: False
    assert p.run_once(T) == 4 and len(seen) == 6


def test_errors_are_swallowed(conn: Redis) -> None:
    _register(conn)

    def broken(trigger: StoredTrigger) -> None:
        raise RuntimeError("boom")

    assert Prefetcher(conn, lookahead=10, warm=broken).run_once(T) == 0
    unreachable = connection.connect("redis://127.0.0.1:1/0", timeout=0.2)
    assert Prefetcher(unreachable, lookahead=10).run_once(T) == 0


def test_the_worker_warms_the_caches_a_delivery_reads(redis_url: str, conn: Redis) -> None:
    url = f"http://127.0.0.1:9/warm/{time.time_ns()}"  # a url no other test has parsed
    edits.replace(conn, "ws", [Trigger(cron="5 * * * * *", url=url, method="POST", payload={"a": 1})], now=lambda: T)
    (trigger,) = store.load_definitions(conn, ["ws:0"]).values()
    runtime = DeliveryRuntime(make_engine_settings(redis_url))
    try:
        parsed, aio = sending.parsed_url.cache_info(), transport.aiohttp_url.cache_info()
        runtime.warm(trigger)
        assert sending.parsed_url.cache_info().currsize == parsed.currsize + 1
        assert transport.aiohttp_url.cache_info().currsize == aio.currsize + 1
        assert "payload_json" in vars(trigger) and trigger.payload_json == b'{"a": 1}'
        # What the delivery then reads comes from the cache.
        hits = sending.parsed_url.cache_info().hits
        sending.parsed_url(url)
        assert sending.parsed_url.cache_info().hits == hits + 1
    finally:
        runtime.close()


def test_the_thread_prefetches_while_idle_and_waits_while_busy(conn: Redis) -> None:
    second = int(time.time() + 30) % 60  # due about 30 s from now, within a 60 s lookahead
    edits.replace(conn, "ws", [_trigger(f"{second} * * * * *")])
    seen, warm = _collector()
    busy = threading.Event()
    busy.set()
    stop = threading.Event()
    thread = prefetch.run_in_thread(Prefetcher(conn, lookahead=60, warm=warm, busy=busy.is_set), 0.05, stop, time.time)
    try:
        time.sleep(0.3)
        assert seen == []  # busy: nothing done
        busy.clear()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == ["ws:0"]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_the_scheduler_prefetches_between_ticks(redis_url: str, conn: Redis) -> None:
    now = time.time()
    second = int(now + 30) % 60  # due about 30 s from now, within a 60 s lookahead
    edits.replace(conn, "ws", [_trigger(f"{second} * * * * *")])
    settings = make_engine_settings(redis_url, prefetch_seconds=60, scheduler_interval_seconds=0.2)
    scheduler = scheduling.TriggerScheduler(settings, connection=connection.connect(redis_url))
    seen, warm = _collector()
    scheduler.prefetcher.warm = warm
    runner = threading.Thread(target=scheduler.run, daemon=True)
    scheduler._install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen == ["ws:0"]
    finally:
        scheduler.stopping = True
        runner.join(5)
    assert not runner.is_alive()
