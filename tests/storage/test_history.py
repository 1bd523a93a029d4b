"""`scheduler_api.storage.history`: delivery records and their retention (keep counts and keep time
per workspace, the history cap), and Redis not growing at a constant trigger count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.cron import iso as _iso
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import edits, firings, keys
from scheduler_api.storage.history import Record
from scheduler_api.triggers import Trigger
from tests.support.api import deliveries
from tests.support.clock import T, iso_second
from tests.support.engine import deliver, fire_now, record_of, tick_and_deliver
from tests.support.factories import WS, make_engine_settings, make_settings, make_trigger
from tests.support.receiver import Receiver
from tests.support.redis_state import history_counts


def test_history_cap_is_per_workspace(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    # The cap bounds what the two keep counts do not: records of firings still retrying.
    settings = make_settings(
        redis_url,
        history_max_per_workspace=3,
        completed_keep_count=1,
        failed_keep_count=1,
        delivery_backoff_seconds=10**9,
        delivery_max_backoff_seconds=10**9,  # the retries stay pending (ticks run at T, ahead of the clock)
        worker_concurrency=5,
    )
    receiver.on("/a", *[(500, 0)] * 10)
    receiver.on("/b", *[(500, 0)] * 10)
    edits.replace(conn, "a", [Trigger(cron="* * * * * *", url=receiver.url + "/a", method="GET")], now=lambda: T)
    edits.replace(conn, "b", [Trigger(cron="*/2 * * * * *", url=receiver.url + "/b", method="GET")], now=lambda: T)
    tick_and_deliver(conn, settings, *(T + k + 0.1 for k in range(1, 6)))
    assert len(receiver.to("/a")) == 5 and len(receiver.to("/b")) == 2
    a = deliveries(client, ws="a")
    assert [(r["scheduled_at"], r["outcome"]) for r in a] == [(_iso(T + k), "retrying") for k in (5, 4, 3)]
    assert [r["scheduled_at"] for r in deliveries(client, ws="b")] == [_iso(T + 4), _iso(T + 2)]
    assert history_counts(conn, "a") == (3, 3) and history_counts(conn, "b") == (2, 2)  # no orphaned record


def test_a_record_reads_back_as_it_was_written() -> None:
    """The JSON shapes of the API (key order included), and `Record` round trips through them."""
    firing = firings.Firing(f"ws:0@{_iso(T + 0.25)}", "ws:0", "v", T + 0.25)
    tries: list[dict[str, Any]] = [{"attempt": 1, "status": 500}]
    final = ["id", "jobId", "workspace_id", "scheduled_at", "attempts", "outcome", "finished_at"]
    made = {
        "delivered": (Record.delivered(firing, "ws", tries, finished_at=T + 1.5), final),
        "failed": (Record.failed(firing, "ws", tries, finished_at=T + 1.5), final),
        "blocked": (Record.blocked(firing, "ws", tries, finished_at=T + 1.5), final),
        "retrying": (
            Record.retrying(firing, "ws", tries, next_attempt_at=T + 10.125),
            [*final[:-1], "next_attempt_at"],
        ),
        "missed": (
            Record.missed("ws:0@" + _iso(T), "ws:0", "ws", T, late_seconds=61.0004, missed_since=T - 3600),
            ["id", "jobId", "workspace_id", "scheduled_at", "outcome", "late_seconds", "missed_since", "attempts"],
        ),
    }
    for outcome, (record, shape) in made.items():
        data = record.to_dict()
        assert list(data) == shape and data["outcome"] == outcome
        assert Record.from_json(record.to_json()).to_dict() == data
    assert made["delivered"][0].to_dict()["finished_at"] == "2027-01-15T08:00:01.500Z"
    assert made["missed"][0].to_dict()["late_seconds"] == 61.0
    assert made["missed"][0].to_dict()["missed_since"] == "2027-01-15T07:00:00Z"


def test_default_retention_keeps_the_last_1000_failed_and_100_delivered(conn: Redis) -> None:
    # Issue #3: "completed ones kept 24 h / last 100, failed ones last 1000", with the defaults.
    retention = firings.Retention.from_settings(make_settings("redis://unused:6379/0"))
    now = time.time()

    def final(make: Callable[..., Record], i: int, at: float) -> firings.Outcome:
        firing = firings.Firing(f"ws:{i % 7}@{_iso(at)}", f"ws:{i % 7}", "v", at)
        return firings.Outcome.final(make(firing, "ws", [], finished_at=now))

    outcomes = [final(Record.failed, i, T + i) for i in range(1200)]
    outcomes += [final(Record.delivered, i, T + 2000 + i) for i in range(150)]
    for k in range(0, len(outcomes), 100):  # as workers flush them, a hundred at a time
        firings.record(conn, "b", outcomes[k : k + 100], now=now + k / 1000, retention=retention, finished=False)
    assert conn.zcard(keys.failed("ws")) == 1000
    assert conn.zcard(keys.done("ws")) == 100
    assert history_counts(conn, "ws") == (1100, 1100)
    assert conn.zscore(keys.failed("ws"), f"ws:{1199 % 7}@{_iso(T + 1199)}") is not None  # the newest kept


def test_completed_and_failed_keep_counts_are_per_workspace(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(
        redis_url, completed_keep_count=2, failed_keep_count=1, delivery_max_retries=0, worker_concurrency=5
    )
    receiver.on("/a-bad", *[(500, 0)] * 10)
    receiver.on("/b-bad", *[(500, 0)] * 10)
    edits.replace(
        conn,
        "b",
        [
            Trigger(cron="2 * * * * *", url=receiver.url + "/b-ok", method="GET"),
            Trigger(cron="2 * * * * *", url=receiver.url + "/b-bad", method="GET"),
        ],
        now=lambda: T,
    )
    edits.replace(
        conn,
        "a",
        [
            Trigger(cron="* * * * * *", url=receiver.url + "/a-ok", method="GET"),
            Trigger(cron="* * * * * *", url=receiver.url + "/a-bad", method="GET"),
        ],
        now=lambda: T,
    )
    tick_and_deliver(conn, settings, *(T + k + 0.1 for k in range(1, 6)))
    a = deliveries(client, ws="a")
    assert [(r["jobId"], r["scheduled_at"]) for r in a if r["outcome"] == "delivered"] == [
        ("a:0", _iso(T + 5)),
        ("a:0", _iso(T + 4)),
    ]
    assert [(r["jobId"], r["scheduled_at"]) for r in a if r["outcome"] == "failed"] == [("a:1", _iso(T + 5))]
    assert len(a) == 3
    # Workspace b had its firings at T+2 only, before most of a's: a's trimming left them alone.
    b = deliveries(client, ws="b")
    assert sorted((r["jobId"], r["outcome"]) for r in b) == [("b:0", "delivered"), ("b:1", "failed")]


def test_completed_keep_seconds_drops_old_delivered_records(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=1, delivery_max_retries=0)
    receiver.on("/bad", *[(500, 0)] * 10)
    edits.replace(
        conn,
        "ws",
        [
            Trigger(cron="* * * * * *", url=receiver.url + "/ok", method="GET"),
            Trigger(cron="* * * * * *", url=receiver.url + "/bad", method="GET"),
        ],
        now=lambda: T,
    )
    tick_and_deliver(conn, settings, T + 1.1)
    assert len(deliveries(client)) == 2
    time.sleep(1.2)
    tick_and_deliver(conn, settings, T + 2.1)  # finishing new records trims the workspace
    records = deliveries(client)
    assert [(r["jobId"], r["scheduled_at"]) for r in records if r["outcome"] == "delivered"] == [("ws:0", _iso(T + 2))]
    # Failed records are not subject to COMPLETED_KEEP_SECONDS.
    assert sorted(r["scheduled_at"] for r in records if r["outcome"] == "failed") == [_iso(T + 1), _iso(T + 2)]


def test_completed_and_failed_records_are_trimmed_by_count(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, completed_keep_count=5, failed_keep_count=3, delivery_max_retries=0)
    receiver.on("/bad", *[(500, 0)] * 20)
    edits.replace(conn, WS, [make_trigger(receiver.url + "/ok"), make_trigger(receiver.url + "/bad")], now=lambda: T)
    for i in range(1, 13):
        ticking.tick(conn, queue, settings, now=T + i + 0.5)
        deliver(conn, settings)  # one delivery per round: finish order is scheduled order
    assert len(receiver.to("/ok")) == 12 and len(receiver.to("/bad")) == 12

    done = {m.decode() for m in conn.zrange(keys.done(WS), 0, -1)}
    failed = {m.decode() for m in conn.zrange(keys.failed(WS), 0, -1)}
    assert done == {f"ws:0@{iso_second(T + i)}" for i in range(8, 13)}
    assert failed == {f"ws:1@{iso_second(T + i)}" for i in range(10, 13)}
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == done | failed
    assert record_of(conn, "ws:0", T + 1) is None
    rec = record_of(conn, "ws:0", T + 12)
    assert rec is not None and rec["outcome"] == "delivered"


def test_missed_records_count_as_failed_for_retention(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, failed_keep_count=2, misfire_grace_seconds=0)
    edits.replace(conn, WS, [make_trigger(receiver.url + "/m")], now=lambda: T)
    for i in range(1, 6):  # each tick is 0.5 s late with no grace: missed
        assert ticking.tick(conn, queue, settings, now=T + i + 0.5).missed == 1
    assert conn.zcard(keys.failed(WS)) == 2
    assert conn.hlen(keys.records(WS)) == 2
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == {
        f"ws:0@{iso_second(T + 4)}",
        f"ws:0@{iso_second(T + 5)}",
    }
    deliver(conn, settings)
    assert receiver.requests == []


def test_completed_records_are_trimmed_by_age(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, completed_keep_seconds=60, completed_keep_count=100)
    now = time.time()
    old = {f"ws:9@old-{i}": now - 3600 - i for i in range(3)}
    recent = {"ws:9@recent": now - 30}
    for fid, at in {**old, **recent}.items():
        record = Record.delivered(firings.Firing(fid, "ws:9", "v", at), WS, [], finished_at=at)
        firings.record(
            conn,
            "no-batch",
            [firings.Outcome.final(record)],
            now=at,
            retention=firings.Retention(keep_seconds=10**9, keep_done=100, keep_failed=100, keep_history=1000),
            finished=False,
        )
    assert conn.zcard(keys.done(WS)) == 4

    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/age")])
    deliver(conn, settings)
    current = f"ws:0@{iso_second(due)}"
    assert {m.decode() for m in conn.zrange(keys.done(WS), 0, -1)} == {"ws:9@recent", current}
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == {"ws:9@recent", current}
    assert {m.decode() for m in conn.zrange(keys.history(WS), 0, -1)} == {"ws:9@recent", current}


@pytest.mark.slow
def test_redis_does_not_grow_at_a_constant_trigger_count(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, completed_keep_count=10, failed_keep_count=4, delivery_max_retries=1)
    receiver.on("/bad", *[(500, 0)] * 1000)
    triggers = [make_trigger(receiver.url + "/ok") for _ in range(4)] + [make_trigger(receiver.url + "/bad")]
    edits.replace(conn, WS, triggers, now=lambda: T)

    def persistent_keys() -> set[str]:
        # Keys with a TTL (rq's per-worker entries of the burst workers) expire by themselves.
        return {k.decode() for k in conn.keys("*") if conn.ttl(k) == -1}

    sizes = []
    for i in range(1, 21):
        ticking.tick(conn, queue, settings, now=T + i + 0.5)  # T is ahead of the real clock:
        deliver(conn, settings)  # the retry of the previous round is moved at once
        sizes.append((len(persistent_keys()), conn.hlen(keys.records(WS)), conn.dbsize()))
    assert len(receiver.to("/ok")) == 4 * 20
    assert len(receiver.to("/bad")) >= 2 * 19
    assert conn.zcard(keys.done(WS)) == 10
    assert conn.zcard(keys.failed(WS)) == 4
    assert max(s[1] for s in sizes) <= 10 + 4 + 1  # + the latest /bad firing, "retrying"
    assert sizes[-1][0] == sizes[10][0], sizes
    assert max(s[0] for s in sizes[10:]) <= sizes[10][0]
    assert not any(k.startswith(("rq:job:", keys.BATCH_PREFIX)) for k in persistent_keys())
    assert conn.zcard(keys.SCHEDULE) == 5
    assert conn.zcard(keys.OUTBOX) == 0 and conn.zcard(keys.LEASES) == 0
