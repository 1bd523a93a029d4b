"""`scheduler_api.engine.tick`: due times to firings to RQ jobs, exactly once; grace and missed runs;
paused workspaces and disabled triggers; time zones across DST transitions.

`tick` runs with an injected `now` at T (tests.support.clock), a whole hour of the real clock's
future, so the real-clock parts (leases, retries) never interfere with the injected times;
`run_worker(burst=True)` delivers what it enqueued to a real local HTTP receiver.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api import cron
from scheduler_api.cron import iso
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.storage.connection import connect
from scheduler_api.triggers import Trigger
from tests.support.api import jobs
from tests.support.clock import EVERY_SECOND, T, iso_second, parse
from tests.support.engine import deliver, tick_and_deliver
from tests.support.factories import WS, make_engine_settings, make_settings, make_trigger
from tests.support.receiver import Received, Receiver, headers_of, scheduled_ats


def _score(conn: Redis, job_id: str) -> float | None:
    return conn.zscore(keys.SCHEDULE, job_id)


def test_one_firing_per_scheduled_second_no_drift_no_double_no_skip(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/s")], now=lambda: T)
    assert _score(conn, "ws:0") == T + 1
    assert ticking.tick(conn, queue, settings, now=T + 0.99).fired == 0
    assert queue.count == 0

    for k, now in enumerate((T + 1.3, T + 2.1, T + 3.05), start=1):
        result = ticking.tick(conn, queue, settings, now=now)
        assert (result.fired, result.missed, result.pushed) == (1, 0, 1)
        assert queue.count == k
        assert _score(conn, "ws:0") == T + k + 1  # next run from the scheduled time, not from now
        again = ticking.tick(conn, queue, settings, now=now)  # the same instant: nothing new
        assert (again.fired, again.missed, again.retried, again.pushed) == (0, 0, 0, 0)
        assert queue.count == k

    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1), iso_second(T + 2), iso_second(T + 3)]
    assert [headers_of(r)["idempotency-key"] for r in receiver.requests] == [
        f"ws:0@{iso_second(T + k)}" for k in (1, 2, 3)
    ]
    for k in (1, 2, 3):
        rec = firings.get_record(conn, f"ws:0@{iso_second(T + k)}")
        assert rec is not None and rec["outcome"] == "delivered"
    assert queue.count == 0


def test_tick_exactly_at_the_due_time_fires_and_the_next_waits(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/e", "*/10 * * * * *")], now=lambda: T)
    assert _score(conn, "ws:0") == T + 10
    assert ticking.tick(conn, queue, settings, now=T + 10).fired == 1
    for now in (T + 10.5, T + 15, T + 19.999):
        assert ticking.tick(conn, queue, settings, now=now).fired == 0
    assert ticking.tick(conn, queue, settings, now=T + 20).fired == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 10), iso_second(T + 20)]


def test_five_field_cron_fires_on_the_minute(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/min", "*/5 * * * *")], now=lambda: T + 1)
    assert _score(conn, "ws:0") == T + 300
    assert ticking.tick(conn, queue, settings, now=T + 299.9).fired == 0
    assert ticking.tick(conn, queue, settings, now=T + 300.4).fired == 1
    assert _score(conn, "ws:0") == T + 600
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == ["2027-01-15T08:05:00Z"]


def test_late_tick_within_grace_fires_once_for_the_latest_time(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    assert settings.misfire_grace_seconds == 60
    edits.replace(conn, WS, [make_trigger(receiver.url + "/late")], now=lambda: T)
    result = ticking.tick(conn, queue, settings, now=T + 30.4)
    assert (result.fired, result.missed) == (1, 0)
    assert queue.count == 1
    assert _score(conn, "ws:0") == T + 31
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 30)]  # the most recent due time, no burst of catch-ups
    assert conn.zcard(keys.failed(WS)) == 0


def test_late_tick_within_grace_for_a_sparse_cron(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    # Due at T+10 (every 10 s), first tick at T+45: the T+40 firing, 5 s late, is fired alone.
    edits.replace(conn, WS, [make_trigger(receiver.url + "/sparse", "*/10 * * * * *")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 45).fired == 1
    assert _score(conn, "ws:0") == T + 50
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 40)]


def test_beyond_grace_is_recorded_as_missed_and_not_delivered(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/hourly", "0 * * * *")], now=lambda: T)
    assert _score(conn, "ws:0") == T + 3600
    now = T + 3600 + 2 * 3600 + 1800  # 2.5 h after the first due time; the last one was 30 min ago
    result = ticking.tick(conn, queue, settings, now=now)
    assert (result.fired, result.missed) == (0, 1)
    assert queue.count == 0
    next_run = _score(conn, "ws:0")
    assert next_run is not None and next_run > now
    assert next_run == T + 4 * 3600

    fid = f"ws:0@{iso_second(T + 3 * 3600)}"
    rec = firings.get_record(conn, fid)
    assert rec is not None
    assert rec["outcome"] == "missed"
    assert rec["scheduled_at"] == iso_second(T + 3 * 3600)
    assert rec["late_seconds"] == 1800
    assert rec["attempts"] == []
    assert conn.zscore(keys.failed(WS), fid) is not None
    assert conn.zcard(keys.done(WS)) == 0

    deliver(conn, settings)
    assert receiver.requests == []
    # The trigger keeps its schedule: the next hour fires on time.
    assert ticking.tick(conn, queue, settings, now=T + 4 * 3600 + 0.5).fired == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 4 * 3600)]


def test_zero_grace_misses_late_ticks(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, misfire_grace_seconds=0)
    edits.replace(conn, WS, [make_trigger(receiver.url + "/g")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1).fired == 1  # exactly on time
    assert ticking.tick(conn, queue, settings, now=T + 2.2).missed == 1
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1)]
    rec = firings.get_record(conn, f"ws:0@{iso_second(T + 2)}")
    assert rec is not None and rec["outcome"] == "missed"


def test_queued_firings_of_a_deleted_trigger_are_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/del"), make_trigger(receiver.url + "/del")], now=lambda: T)
    edits.replace(conn, "other", [make_trigger(receiver.url + "/keep")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 3
    assert ticking.tick(conn, queue, settings, now=T + 2.3).fired == 3
    assert edits.delete(conn, WS) == 2
    deliver(conn, settings)
    assert receiver.to("/del") == []
    assert scheduled_ats(receiver.requests) == [
        iso_second(T + 1),
        iso_second(T + 2),
    ]  # the other workspace is untouched
    for i in (0, 1):
        for k in (1, 2):
            assert firings.get_record(conn, f"ws:{i}@{iso_second(T + k)}") is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []

    for now in (T + 3.1, T + 4.1, T + 300):
        result = ticking.tick(conn, queue, settings, now=now)
        assert result.fired == 1  # only `other`
    deliver(conn, settings)
    assert receiver.to("/del") == []
    assert [m.decode() for m in conn.zrange(keys.SCHEDULE, 0, -1)] == ["other:0"]


def test_a_queued_firing_is_sent_with_the_new_definition_of_its_trigger(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """A replace that keeps the id and the schedule applies to every firing not yet started: the
    queued firing goes to the new url, once, not to the old one."""
    edits.replace(conn, WS, [make_trigger(receiver.url + "/old")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    edits.replace(conn, WS, [make_trigger(receiver.url + "/new")], now=lambda: T + 1.5)
    deliver(conn, settings)
    assert receiver.to("/old") == []
    (r,) = receiver.to("/new")
    assert headers_of(r)["x-scheduler-scheduled-at"] == iso_second(T + 1)


def test_queued_firings_of_a_rescheduled_or_removed_trigger_are_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    edits.replace(conn, WS, [make_trigger(receiver.url + "/old")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    # Same id "0", a new cron: a new version, so the firing of the old schedule is not sent.
    edits.replace(conn, WS, [make_trigger(receiver.url + "/new", "*/2 * * * * *")], now=lambda: T + 1.5)
    deliver(conn, settings)
    assert receiver.requests == []

    assert ticking.tick(conn, queue, settings, now=T + 2.2).fired == 1
    deliver(conn, settings)
    (r,) = receiver.to("/new")
    assert headers_of(r)["x-scheduler-scheduled-at"] == iso_second(T + 2)
    assert headers_of(r)["x-scheduler-attempt"] == "1"
    assert ticking.tick(conn, queue, settings, now=T + 4.2).fired == 1
    edits.delete(conn, WS)
    deliver(conn, settings)
    assert len(receiver.to("/new")) == 1


def test_an_identical_replace_keeps_the_queued_firing_and_the_schedule(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    t = make_trigger(receiver.url + "/same")
    edits.replace(conn, WS, [t], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.3)
    edits.replace(conn, WS, [t], now=lambda: T + 1.4)
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1)]
    ticking.tick(conn, queue, settings, now=T + 2.3)
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 1), iso_second(T + 2)]


def test_two_concurrent_schedulers_enqueue_each_firing_once(
    conn: Redis, redis_url: str, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    n_triggers, seconds = 50, 5
    edits.replace(conn, WS, [make_trigger(f"{receiver.url}/c/{i}") for i in range(n_triggers)], now=lambda: T)
    steps = [T + 1 + j * 0.05 for j in range(seconds * 20)]  # T+1.00 .. T+5.95
    barrier = threading.Barrier(2)
    fired: list[int] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        own = connect(redis_url, timeout=5)
        try:
            q = Queue(settings.queue_name, connection=own)
            barrier.wait()
            total = 0
            for now in steps:
                total += ticking.tick(own, q, settings, now=now).fired
            fired.append(total)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        finally:
            own.close()

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert sum(fired) == n_triggers * seconds

    deliver(conn, settings)
    got = Counter(headers_of(r)["idempotency-key"] for r in receiver.requests)
    expected = {f"ws:{i}@{iso_second(T + k)}" for i in range(n_triggers) for k in range(1, seconds + 1)}
    assert set(got) == expected
    assert max(got.values()) == 1
    assert len(receiver.requests) == n_triggers * seconds
    assert conn.zcard(keys.OUTBOX) == 0 and conn.keys(keys.BATCH_PREFIX + "*") == []


def test_two_thousand_triggers_due_at_the_same_second(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(
        redis_url, worker_concurrency=50, worker_max_in_flight=50, completed_keep_count=5000
    )
    n = 2000
    per_ws = 500
    for w in range(n // per_ws):
        edits.replace(
            conn, f"bulk{w}", [make_trigger(f"{receiver.url}/b", "0 * * * * *") for _ in range(per_ws)], now=lambda: T
        )
    expected = {f"bulk{w}:{i}@{iso_second(T + 60)}" for w in range(n // per_ws) for i in range(per_ws)}
    started = time.monotonic()
    result = ticking.tick(conn, queue, settings, now=T + 60.2)
    tick_seconds = time.monotonic() - started
    assert result.fired == n
    assert result.pushed == math.ceil(n / settings.scheduler_batch_size)
    assert queue.count == math.ceil(n / settings.scheduler_batch_size)
    assert tick_seconds < 5.0
    assert ticking.tick(conn, queue, settings, now=T + 60.3).fired == 0

    deliver(conn, settings)
    assert queue.count == 0
    assert conn.keys(keys.BATCH_PREFIX + "*") == []
    # The test receiver (http.server, listen backlog 5) may leave a few of the 50 simultaneous
    # connections unanswered within the delivery timeout: those attempts failed and are retried.
    # Nothing else may fail, and every firing ends up delivered once.
    first_round = Counter(headers_of(r)["idempotency-key"] for r in receiver.requests)
    assert len(first_round) >= n - 50
    for k in range(20):
        if sum(conn.zcard(keys.done(f"bulk{w}")) for w in range(n // per_ws)) == n:
            break
        ticking.tick(conn, queue, settings, now=T + 60.4 + k * 0.01)  # retries are due: T is ahead
        deliver(conn, settings)
    records = [firings.get_record(conn, fid) for fid in expected]
    assert all(rec is not None and rec["outcome"] == "delivered" for rec in records)
    assert sum(conn.zcard(keys.done(f"bulk{w}")) for w in range(n // per_ws)) == n
    received = Counter(headers_of(r)["idempotency-key"] for r in receiver.requests)
    assert set(received) == expected
    for rec in records:
        assert rec is not None
        *failed, ok = rec["attempts"]
        assert ok["status"] == 200
        assert all(a["status"] is None and a["error"] for a in failed), rec  # transport failures only
        assert received[rec["id"]] <= len(rec["attempts"])
    assert sum(received.values()) <= n + 50
    assert conn.zcard(keys.SCHEDULE) == n
    assert {s for _, s in conn.zrange(keys.SCHEDULE, 0, -1, withscores=True)} == {T + 120}


def test_a_stored_cron_the_api_now_refuses_still_fires(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """Rules added for new input (cron.validate) never stop a definition stored before them."""
    legacy = Trigger.model_construct(  # as stored before the rule: without today's validation
        cron="*/61 * * * * *", url=receiver.url + "/old", method="POST", payload=None, headers=None, timezone=None
    )
    edits.replace(conn, WS, [legacy], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 60.2).fired == 1  # "*/61" seconds: :00 only
    deliver(conn, settings)
    assert scheduled_ats(receiver.requests) == [iso_second(T + 60)]


def test_paused_workspace_keeps_its_schedule_fires_nothing_and_resumes_without_backfill(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    edits.replace(
        conn,
        "p",
        [
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/a", method="GET"),
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/off", method="GET", enabled=False),
            Trigger(cron="0 * * * *", url=receiver.url + "/hourly", method="GET"),
        ],
        now=lambda: T - 0.5,
    )
    edits.replace(conn, "q", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/q", method="GET")], now=lambda: T - 0.5)
    assert client.post("/api/workspaces/p/pause").status_code == 200
    listed = jobs(client, "p")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(True, True), (False, True), (True, True)]
    assert [j["next_run_at"] for j in listed] == [iso(T)] * 3

    tick_and_deliver(conn, settings, T + 0.1, T + 1.1, T + 2.1)
    assert scheduled_ats(receiver.to("/q")) == [iso(T), iso(T + 1), iso(T + 2)]  # another workspace fires
    assert receiver.to("/a") == [] and receiver.to("/off") == [] and receiver.to("/hourly") == []
    listed = jobs(client, "p")
    assert [j["next_run_at"] for j in listed] == [iso(T + 3), iso(T + 3), iso(T + 3600)]  # schedules advanced
    assert all(j["paused"] for j in listed)
    assert client.get("/api/workspaces/p/deliveries").json()["deliveries"] == []  # nothing "missed" either
    assert int(conn.hget(keys.METRICS, "missed") or 0) == 0

    assert client.post("/api/workspaces/p/resume").status_code == 200
    listed = jobs(client, "p")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(True, False), (False, True), (True, False)]
    tick_and_deliver(conn, settings, T + 3.1, T + 4.1)
    assert scheduled_ats(receiver.to("/a")) == [iso(T + 3), iso(T + 4)]  # from the next run time, no backfill
    assert receiver.to("/off") == [] and receiver.to("/hourly") == []
    records = client.get("/api/workspaces/p/deliveries").json()["deliveries"]
    assert [(r["jobId"], r["scheduled_at"], r["outcome"]) for r in records] == [
        ("p:0", iso(T + 4), "delivered"),
        ("p:0", iso(T + 3), "delivered"),
    ]


def test_resume_after_a_long_pause_does_not_fire_the_passed_run_times(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    edits.replace(conn, "p", [Trigger(cron="*/10 * * * *", url=receiver.url + "/s", method="GET")], now=lambda: T - 1)
    assert client.post("/api/workspaces/p/pause").status_code == 200
    tick_and_deliver(conn, settings, *(T + k * 600 + 0.5 for k in range(3)))  # T, T+10 min, T+20 min pass while paused
    assert jobs(client, "p")[0]["next_run_at"] == iso(T + 1800)
    assert client.post("/api/workspaces/p/resume").status_code == 200
    tick_and_deliver(conn, settings, T + 1799, T + 1800.5)
    assert scheduled_ats(receiver.to("/s")) == [iso(T + 1800)]


def test_a_disabled_trigger_never_fires(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    edits.replace(
        conn,
        "ws",
        [
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/on", method="GET"),
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/off", method="GET", enabled=False),
        ],
        now=lambda: T - 0.5,
    )
    # Regular ticks, then late ones (the misfire path: the latest run time fires).
    tick_and_deliver(conn, settings, T + 0.1, T + 1.1, T + 5.5, T + 500.2)
    assert receiver.to("/off") == []
    assert scheduled_ats(receiver.to("/on")) == [iso(T), iso(T + 1), iso(T + 5), iso(T + 500)]
    assert {r["jobId"] for r in client.get("/api/workspaces/ws/deliveries").json()["deliveries"]} == {"ws:0"}
    assert jobs(client, "ws")[1]["next_run_at"] == iso(T + 501)


NY = "America/New_York"


BERLIN = "Europe/Berlin"


def scheduled_at(r: Received) -> str:
    return {k.lower(): v for k, v in r.headers.items()}["x-scheduler-scheduled-at"]


def test_misfire_across_the_fall_back_fires_the_latest_time_and_moves_forward(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """A scheduler that was away from 05:58Z to 06:00:30Z on 2026-11-01 (New York, every minute):
    the latest run time is 01:00 EST = 06:00Z (the hour field is *, so the repeated hour runs; 30 s
    late, within grace); it fires once and the next run is 01:01 EST = 06:01Z. It must not go back
    to 01:00 EDT (05:00Z)."""
    settings = make_settings(redis_url, misfire_grace_seconds=120)
    queue = Queue(settings.queue_name, connection=conn)
    edits.replace(
        conn,
        "tz",
        [Trigger(cron="* * * * *", url=receiver.url + "/m", method="GET", timezone=NY)],
        now=lambda: parse("2026-11-01T05:57:30Z"),
    )
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T05:58:00Z"
    result = ticking.tick(conn, queue, settings, now=parse("2026-11-01T06:00:30Z"))
    assert (result.fired, result.missed) == (1, 0)
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T06:01:00Z"
    again = ticking.tick(conn, queue, settings, now=parse("2026-11-01T06:00:59Z"))
    assert (again.fired, again.missed) == (0, 0)
    again = ticking.tick(conn, queue, settings, now=parse("2026-11-01T06:01:00Z"))
    assert (again.fired, again.missed) == (1, 0)
    worker.run_worker(settings, conn, burst=True)
    assert sorted(scheduled_at(r) for r in receiver.to("/m")) == ["2026-11-01T06:00:00Z", "2026-11-01T06:01:00Z"]


def test_misfire_beyond_grace_during_the_repeated_hour_is_missed_once(conn: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, misfire_grace_seconds=30)
    queue = Queue(settings.queue_name, connection=conn)
    edits.replace(
        conn,
        "tz",
        [Trigger(cron="*/15 * * * *", url="http://127.0.0.1:9/x", method="GET", timezone=NY)],
        now=lambda: parse("2026-11-01T05:10:00Z"),
    )  # next: 05:15Z; the scheduler comes back at 06:20Z (01:20 EST)
    result = ticking.tick(conn, queue, settings, now=parse("2026-11-01T06:20:00Z"))
    assert (result.fired, result.missed) == (0, 1)
    # The latest run time is 01:15 EST (the hour field is *, so the repeated hour runs).
    rec = firings.get_record(conn, "tz:0@2026-11-01T06:15:00Z")
    assert rec is not None and rec["outcome"] == "missed"
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T06:30:00Z"
    # Later ticks before the next run time neither miss it again nor fire anything.
    for minute in range(21, 30):
        again = ticking.tick(conn, queue, settings, now=parse(f"2026-11-01T06:{minute:02d}:00Z"))
        assert (again.fired, again.missed) == (0, 0), minute
    assert int(conn.hget(keys.METRICS, "missed") or 0) == 1


NIGHTS = {
    "ny-spring": (
        NY,
        "2026-03-08T03:00:00Z",
        "2026-03-08T10:00:00Z",
        {
            "30 2 * * *": ["2026-03-08T07:00:00Z"],
            "0 2 * * *": ["2026-03-08T07:00:00Z"],
            "*/20 2 * * *": ["2026-03-08T07:00:00Z"],
            "30 1 * * *": ["2026-03-08T06:30:00Z"],
            "30 3 * * *": ["2026-03-08T07:30:00Z"],
            "0 * * * *": [f"2026-03-08T{h:02d}:00:00Z" for h in range(4, 11)],
        },
    ),
    "ny-fall": (
        NY,
        "2026-11-01T03:00:00Z",
        "2026-11-01T10:00:00Z",
        {
            "30 1 * * *": ["2026-11-01T05:30:00Z"],
            "0 1 * * *": ["2026-11-01T05:00:00Z"],
            "30 2 * * *": ["2026-11-01T07:30:00Z"],
            # the hour field is *: the repeated 01:00 fires in both occurrences (05:00Z, 06:00Z)
            "0 * * * *": [f"2026-11-01T{h:02d}:00:00Z" for h in range(4, 11)],
        },
    ),
    "berlin-spring": (
        BERLIN,
        "2026-03-28T22:00:00Z",
        "2026-03-29T04:00:00Z",
        {
            "30 2 * * *": ["2026-03-29T01:00:00Z"],
            "0 2 * * *": ["2026-03-29T01:00:00Z"],
            "30 3 * * *": ["2026-03-29T01:30:00Z"],
            "30 1 * * *": ["2026-03-29T00:30:00Z"],
        },
    ),
    "berlin-fall": (
        BERLIN,
        "2026-10-24T22:00:00Z",
        "2026-10-25T04:00:00Z",
        {
            "30 2 * * *": ["2026-10-25T00:30:00Z"],
            "0 2 * * *": ["2026-10-25T00:00:00Z"],
            "30 3 * * *": ["2026-10-25T02:30:00Z"],
            "30 1 * * *": ["2026-10-24T23:30:00Z"],
        },
    ),
}


def _batched_firings(conn: Redis) -> list[firings.Firing]:
    out = []
    for key in conn.scan_iter(keys.BATCH_PREFIX + "*"):
        out += [firings.Firing.from_json(raw) for raw in conn.hvals(key)]
    return out


@pytest.mark.parametrize("night", sorted(NIGHTS))
def test_scheduler_tick_every_minute_across_the_transition_night(
    night: str, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    tz, start, end, crons = NIGHTS[night]
    settings: Settings = make_settings(redis_url, worker_concurrency=5)
    queue = Queue(settings.queue_name, connection=conn)
    exprs = list(crons)
    triggers = [Trigger(cron=e, url=f"{receiver.url}/{i}", method="POST", timezone=tz) for i, e in enumerate(exprs)]
    edits.replace(conn, "tz", triggers, now=lambda: parse(start))

    now = parse(start)
    while now <= parse(end):
        result = ticking.tick(conn, queue, settings, now=now)
        assert result.missed == 0
        now += 60

    got: dict[str, list[str]] = {e: [] for e in exprs}
    for f in _batched_firings(conn):
        got[exprs[int(keys.split_job_id(f.job_id)[1])]].append(cron.iso(f.scheduled_at))
    assert {e: sorted(v) for e, v in got.items()} == crons

    worker.run_worker(settings, conn, burst=True)
    delivered: Counter[tuple[str, str]] = Counter()
    for r in receiver.requests:
        delivered[(r.path, scheduled_at(r))] += 1
    expected = Counter({(f"/{i}", when): 1 for i, e in enumerate(exprs) for when in crons[e]})
    assert delivered == expected  # each expected time exactly once, nothing else
