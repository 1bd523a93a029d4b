"""End-to-end tests of scheduling: due times to firings to RQ jobs, exactly once.

`scheduler_api.engine.tick.tick` runs with an injected `now`; `worker.run_worker(burst=True)` delivers what it
enqueued to a real local HTTP receiver. T is a whole hour of the real clock's future, so the
real-clock parts (leases, retries) never interfere with the injected times.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import pytest
import redis
from conftest import Receiver
from conftest import headers_of as _h
from conftest import iso_second as _iso
from conftest import make_engine_settings as _settings
from redis import Redis
from rq import Queue, SimpleWorker

from scheduler_api.delivery import batch as delivery
from scheduler_api.delivery import worker
from scheduler_api.embedded_redis import RedisServer
from scheduler_api.engine import scheduler as scheduling
from scheduler_api.engine import tick as ticking
from scheduler_api.errors import SettingsError
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.storage.connection import connect
from scheduler_api.triggers import Trigger

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole hour
WS = "ws"
RETENTION = firings.Retention(keep_seconds=86_400, keep_done=100, keep_failed=100, keep_history=1000)


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return _settings(redis_url)


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")


def _trigger(url: str, cron_expr: str = "* * * * * *", method: str = "POST", **kw: Any) -> Trigger:
    return Trigger(cron=cron_expr, url=url, method=method, **kw)


def _deliver(conn: Redis, settings: Settings) -> None:
    worker.run_worker(settings, conn, burst=True)


def _scheduled(receiver: Receiver) -> list[str]:
    return [_h(r)["x-scheduler-scheduled-at"] for r in receiver.requests]


def _score(conn: Redis, job_id: str) -> float | None:
    return conn.zscore(keys.SCHEDULE, job_id)


# --- 9. precise firing -----------------------------------------------------------------------------


def test_one_firing_per_scheduled_second_no_drift_no_double_no_skip(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/s")], now=lambda: T)
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

    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 1), _iso(T + 2), _iso(T + 3)]
    assert [_h(r)["idempotency-key"] for r in receiver.requests] == [f"ws:0@{_iso(T + k)}" for k in (1, 2, 3)]
    for k in (1, 2, 3):
        rec = firings.get_record(conn, f"ws:0@{_iso(T + k)}")
        assert rec is not None and rec["outcome"] == "delivered"
    assert queue.count == 0


def test_tick_exactly_at_the_due_time_fires_and_the_next_waits(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/e", "*/10 * * * * *")], now=lambda: T)
    assert _score(conn, "ws:0") == T + 10
    assert ticking.tick(conn, queue, settings, now=T + 10).fired == 1
    for now in (T + 10.5, T + 15, T + 19.999):
        assert ticking.tick(conn, queue, settings, now=now).fired == 0
    assert ticking.tick(conn, queue, settings, now=T + 20).fired == 1
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 10), _iso(T + 20)]


def test_five_field_cron_fires_on_the_minute(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/min", "*/5 * * * *")], now=lambda: T + 1)
    assert _score(conn, "ws:0") == T + 300
    assert ticking.tick(conn, queue, settings, now=T + 299.9).fired == 0
    assert ticking.tick(conn, queue, settings, now=T + 300.4).fired == 1
    assert _score(conn, "ws:0") == T + 600
    _deliver(conn, settings)
    assert _scheduled(receiver) == ["2027-01-15T08:05:00Z"]


# --- 10. misfires ----------------------------------------------------------------------------------


def test_late_tick_within_grace_fires_once_for_the_latest_time(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    assert settings.misfire_grace_seconds == 60
    store.replace(conn, WS, [_trigger(receiver.url + "/late")], now=lambda: T)
    result = ticking.tick(conn, queue, settings, now=T + 30.4)
    assert (result.fired, result.missed) == (1, 0)
    assert queue.count == 1
    assert _score(conn, "ws:0") == T + 31
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 30)]  # the most recent due time, no burst of catch-ups
    assert conn.zcard(keys.failed(WS)) == 0


def test_late_tick_within_grace_for_a_sparse_cron(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    # Due at T+10 (every 10 s), first tick at T+45: the T+40 firing, 5 s late, is fired alone.
    store.replace(conn, WS, [_trigger(receiver.url + "/sparse", "*/10 * * * * *")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 45).fired == 1
    assert _score(conn, "ws:0") == T + 50
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 40)]


def test_beyond_grace_is_recorded_as_missed_and_not_delivered(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/hourly", "0 * * * *")], now=lambda: T)
    assert _score(conn, "ws:0") == T + 3600
    now = T + 3600 + 2 * 3600 + 1800  # 2.5 h after the first due time; the last one was 30 min ago
    result = ticking.tick(conn, queue, settings, now=now)
    assert (result.fired, result.missed) == (0, 1)
    assert queue.count == 0
    next_run = _score(conn, "ws:0")
    assert next_run is not None and next_run > now
    assert next_run == T + 4 * 3600

    fid = f"ws:0@{_iso(T + 3 * 3600)}"
    rec = firings.get_record(conn, fid)
    assert rec is not None
    assert rec["outcome"] == "missed"
    assert rec["scheduled_at"] == _iso(T + 3 * 3600)
    assert rec["late_seconds"] == 1800
    assert rec["attempts"] == []
    assert conn.zscore(keys.failed(WS), fid) is not None
    assert conn.zcard(keys.done(WS)) == 0

    _deliver(conn, settings)
    assert receiver.requests == []
    # The trigger keeps its schedule: the next hour fires on time.
    assert ticking.tick(conn, queue, settings, now=T + 4 * 3600 + 0.5).fired == 1
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 4 * 3600)]


def test_zero_grace_misses_late_ticks(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = _settings(redis_url, misfire_grace_seconds=0)
    store.replace(conn, WS, [_trigger(receiver.url + "/g")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1).fired == 1  # exactly on time
    assert ticking.tick(conn, queue, settings, now=T + 2.2).missed == 1
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 1)]
    rec = firings.get_record(conn, f"ws:0@{_iso(T + 2)}")
    assert rec is not None and rec["outcome"] == "missed"


# --- 8. removed triggers ---------------------------------------------------------------------------


def test_queued_firings_of_a_deleted_trigger_are_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/del"), _trigger(receiver.url + "/del")], now=lambda: T)
    store.replace(conn, "other", [_trigger(receiver.url + "/keep")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 3
    assert ticking.tick(conn, queue, settings, now=T + 2.3).fired == 3
    assert store.delete(conn, WS) == 2
    _deliver(conn, settings)
    assert receiver.to("/del") == []
    assert _scheduled(receiver) == [_iso(T + 1), _iso(T + 2)]  # the other workspace is untouched
    for i in (0, 1):
        for k in (1, 2):
            assert firings.get_record(conn, f"ws:{i}@{_iso(T + k)}") is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []

    for now in (T + 3.1, T + 4.1, T + 300):
        result = ticking.tick(conn, queue, settings, now=now)
        assert result.fired == 1  # only `other`
    _deliver(conn, settings)
    assert receiver.to("/del") == []
    assert [m.decode() for m in conn.zrange(keys.SCHEDULE, 0, -1)] == ["other:0"]


def test_queued_firings_of_a_replaced_trigger_are_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/old")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    # Same jobId ws:0, new definition (even the same one would be a new version).
    store.replace(conn, WS, [_trigger(receiver.url + "/new")], now=lambda: T + 1.5)
    _deliver(conn, settings)
    assert receiver.requests == []

    assert ticking.tick(conn, queue, settings, now=T + 2.2).fired == 1
    _deliver(conn, settings)
    assert receiver.to("/old") == []
    (r,) = receiver.to("/new")
    assert _h(r)["x-scheduler-scheduled-at"] == _iso(T + 2)
    assert _h(r)["x-scheduler-attempt"] == "1"


def test_identical_replace_still_drops_the_queued_firing(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    t = _trigger(receiver.url + "/same")
    store.replace(conn, WS, [t], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.3)
    store.replace(conn, WS, [t], now=lambda: T + 1.4)
    _deliver(conn, settings)
    assert receiver.requests == []
    ticking.tick(conn, queue, settings, now=T + 2.3)
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 2)]


# --- 12. concurrent schedulers ---------------------------------------------------------------------


def test_two_concurrent_schedulers_enqueue_each_firing_once(
    conn: Redis, redis_url: str, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    n_triggers, seconds = 50, 5
    store.replace(conn, WS, [_trigger(f"{receiver.url}/c/{i}") for i in range(n_triggers)], now=lambda: T)
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

    _deliver(conn, settings)
    got = Counter(_h(r)["idempotency-key"] for r in receiver.requests)
    expected = {f"ws:{i}@{_iso(T + k)}" for i in range(n_triggers) for k in range(1, seconds + 1)}
    assert set(got) == expected
    assert max(got.values()) == 1
    assert len(receiver.requests) == n_triggers * seconds
    assert conn.zcard(keys.OUTBOX) == 0 and conn.keys(keys.BATCH_PREFIX + "*") == []


def test_a_scheduler_that_read_a_due_entry_late_commits_nothing(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """The race made deterministic: scheduler B reads the due entries, A fires them, then B
    commits what it read: B's compare-and-set fails for every entry, fired or missed."""
    store.replace(conn, WS, [_trigger(f"{receiver.url}/r/{i}") for i in range(10)], now=lambda: T)
    store.replace(conn, "h", [_trigger(receiver.url + "/h", "0 * * * *")], now=lambda: T)

    def plans_read_at(now: float) -> list[firings.DuePlan]:
        due = ticking.read_due(conn, now)
        defs = store.load_definitions(conn, [j for j, _ in due])
        return [ticking.plan_entry(j, s, defs[j].cron, defs[j].version, now=now, grace=60) for j, s in due]

    stale = plans_read_at(T + 1.5)
    assert len(stale) == 10 and all(p.firing for p in stale)
    assert ticking.tick(conn, queue, settings, now=T + 1.5).fired == 10  # A wins
    assert firings.commit_due(conn, "loser", stale, now=T + 1.5, retention=RETENTION) == (0, 0)
    assert not conn.exists(keys.batch("loser"))
    assert conn.zscore(keys.OUTBOX, "loser") is None

    late = T + 3 * 3600 + 600  # the hourly trigger is 10 min late: missed
    stale_missed = [p for p in plans_read_at(late) if p.job_id == "h:0"]
    assert stale_missed and stale_missed[0].missed_record is not None
    assert ticking.tick(conn, queue, settings, now=late).missed == 1
    assert firings.commit_due(conn, "loser2", stale_missed, now=late, retention=RETENTION) == (0, 0)
    assert conn.zcard(keys.failed("h")) == 1

    _deliver(conn, settings)
    assert sorted(r.path for r in receiver.requests) == sorted(
        [f"/r/{i}" for i in range(10)] + [f"/r/{i}" for i in range(10)]
    )  # T+1 by A's first tick, then the most recent second at the late tick
    assert len({_h(r)["idempotency-key"] for r in receiver.requests}) == 20


# --- 13. bulk --------------------------------------------------------------------------------------


def test_two_thousand_triggers_due_at_the_same_second(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = _settings(redis_url, worker_concurrency=50, completed_keep_count=5000)
    n = 2000
    per_ws = 500
    for w in range(n // per_ws):
        store.replace(
            conn, f"bulk{w}", [_trigger(f"{receiver.url}/b", "0 * * * * *") for _ in range(per_ws)], now=lambda: T
        )
    expected = {f"bulk{w}:{i}@{_iso(T + 60)}" for w in range(n // per_ws) for i in range(per_ws)}
    started = time.monotonic()
    result = ticking.tick(conn, queue, settings, now=T + 60.2)
    tick_seconds = time.monotonic() - started
    assert result.fired == n
    assert result.pushed == math.ceil(n / settings.scheduler_batch_size)
    assert queue.count == math.ceil(n / settings.scheduler_batch_size)
    assert tick_seconds < 5.0
    assert ticking.tick(conn, queue, settings, now=T + 60.3).fired == 0

    _deliver(conn, settings)
    assert queue.count == 0
    assert conn.keys(keys.BATCH_PREFIX + "*") == []
    # The test receiver (http.server, listen backlog 5) may leave a few of the 50 simultaneous
    # connections unanswered within the delivery timeout: those attempts failed and are retried.
    # Nothing else may fail, and every firing ends up delivered once.
    first_round = Counter(_h(r)["idempotency-key"] for r in receiver.requests)
    assert len(first_round) >= n - 50
    for k in range(20):
        if sum(conn.zcard(keys.done(f"bulk{w}")) for w in range(n // per_ws)) == n:
            break
        ticking.tick(conn, queue, settings, now=T + 60.4 + k * 0.01)  # retries are due: T is ahead
        _deliver(conn, settings)
    records = [firings.get_record(conn, fid) for fid in expected]
    assert all(rec is not None and rec["outcome"] == "delivered" for rec in records)
    assert sum(conn.zcard(keys.done(f"bulk{w}")) for w in range(n // per_ws)) == n
    received = Counter(_h(r)["idempotency-key"] for r in receiver.requests)
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


# --- a batch is never left to an RQ job that will not deliver it ----------------------------------

ONCE = "1 0 8 15 1 *"  # T + 1 only (2027-01-15T08:00:01Z)


def test_a_batch_whose_rq_job_vanished_is_pushed_again(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/v", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1
    queue.empty()  # the job is gone before any worker took it (an operator, a lost Redis write...)
    assert ticking.tick(conn, queue, settings, now=T + 20).pushed == 0  # not checked before 30 s
    with caplog.at_level("WARNING", logger="scheduler_api.scheduler"):
        assert ticking.tick(conn, queue, settings, now=T + 32).pushed == 1
    assert "pushing it again" in caplog.text
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 1)]
    assert conn.zcard(keys.OUTBOX) == 0 and conn.hlen(keys.PUSHED) == 0 and not conn.keys(keys.BATCH_PREFIX + "*")


def test_a_batch_whose_rq_job_failed_before_taking_it_is_pushed_again(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the plain `rq worker`, a job that fails before claiming its batch (here: the worker's
    settings do not load) leaves the firing to the scheduler, which pushes it again."""
    store.replace(conn, WS, [_trigger(receiver.url + "/f", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1

    def broken() -> Settings:
        raise SettingsError("invalid settings: DELIVERY_TIMEOUT_SECONDS: ...")

    monkeypatch.setattr(delivery, "load_settings", broken)
    SimpleWorker([queue], connection=conn).work(burst=True)
    assert receiver.requests == [] and len(queue.failed_job_registry) == 1
    monkeypatch.undo()

    assert ticking.tick(conn, queue, settings, now=T + 32).pushed == 1
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 1)]
    rec = firings.get_record(conn, f"ws:0@{_iso(T + 1)}")
    assert rec is not None and rec["outcome"] == "delivered"


def test_a_batch_still_queued_behind_others_is_not_pushed_twice(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/q", ONCE)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 1
    for now in (T + 32, T + 63, T + 94):  # no worker for a while: the job waits in RQ's queue
        assert ticking.tick(conn, queue, settings, now=now).pushed == 0
    assert queue.count == 1
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 1)]
    assert conn.zcard(keys.OUTBOX) == 0 and conn.hlen(keys.PUSHED) == 0


# --- one bad definition never stops the scheduler ---------------------------------------------------


def test_the_scheduler_loop_survives_redis_refusing_writes(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Out of memory under `noeviction` (DEPLOYMENT.md): every write is refused, from the
    registration and the heartbeat to the tick's metrics; the loop logs and keeps going."""
    with RedisServer() as server:
        own = Redis.from_url(server.url)
        settings = _settings(server.url)
        store.replace(own, WS, [_trigger("https://example.com/", ONCE)], now=lambda: T)
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


def test_a_stored_cron_the_api_now_refuses_still_fires(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """Rules added for new input (cron.validate) never stop a definition stored before them."""
    legacy = Trigger.model_construct(  # as stored before the rule: without today's validation
        cron="*/61 * * * * *", url=receiver.url + "/old", method="POST", payload=None, headers=None, timezone=None
    )
    store.replace(conn, WS, [legacy], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 60.2).fired == 1  # "*/61" seconds: :00 only
    _deliver(conn, settings)
    assert _scheduled(receiver) == [_iso(T + 60)]
