"""Delivery history (issue #7): `GET /api/workspaces/{id}/deliveries?trigger=&outcome=&limit=`.

One record per firing, newest scheduled time first, with each attempt's start, duration, status or
error class and message, the response body cut to RESPONSE_EXCERPT_BYTES. Outcomes: delivered,
retrying, failed, missed, blocked. Retention and the cap are per workspace.

The engine runs in-process: `scheduler_api.engine.tick.tick` with an injected clock at T (in the future of the
real clock, so retries - due at real time + backoff - are moved by the next tick) and a burst
worker delivering to the local receiver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from conftest import Receiver, make_engine_settings, make_settings, tick_and_deliver
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.cron import iso as _iso
from scheduler_api.delivery import worker
from scheduler_api.embedded_redis import free_port
from scheduler_api.engine import retention
from scheduler_api.engine import scheduler as scheduling
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.storage.history import Record
from scheduler_api.triggers import Trigger

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole hour


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return make_engine_settings(redis_url)


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")  # conftest


def deliveries(client: TestClient, ws: str = "ws", **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/workspaces/{ws}/deliveries", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "count", "deliveries"}
    assert body["success"] is True and body["workspace_id"] == ws
    assert body["count"] == len(body["deliveries"])
    records: list[dict[str, Any]] = body["deliveries"]
    return records


def parse(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- one record per outcome ----------------------------------------------------------------------


def test_delivered_record(client: TestClient, conn: Redis, settings: Settings, receiver: Receiver) -> None:
    store.replace(
        conn,
        "ws",
        [Trigger(cron="* * * * *", url=receiver.url + "/ok", method="POST", payload={"a": 1})],
        now=lambda: T - 30,
    )
    before = time.time()
    tick_and_deliver(conn, settings, T + 0.2)
    after = time.time()
    [rec] = deliveries(client)
    assert rec["id"] == "ws:0@2027-01-15T08:00:00Z"
    assert rec["jobId"] == "ws:0"
    assert rec["scheduled_at"] == "2027-01-15T08:00:00Z"
    assert rec["outcome"] == "delivered"
    assert before - 0.01 <= parse(rec["finished_at"]) <= after + 0.01
    [attempt] = rec["attempts"]
    assert attempt["attempt"] == 1
    assert before - 0.01 <= parse(attempt["started_at"]) <= after + 0.01
    assert isinstance(attempt["duration_ms"], int | float) and 0 <= attempt["duration_ms"] < 2000
    assert attempt["status"] == 200
    assert attempt["error"] is None and attempt["message"] is None
    assert attempt["body"] == '{"ok":true}'
    assert rec["id"] == {k.lower(): v for k, v in receiver.to("/ok")[0].headers.items()}["idempotency-key"]


def test_retrying_then_delivered_is_one_record(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    receiver.on("/flaky", (500, 0))
    store.replace(
        conn, "ws", [Trigger(cron="* * * * *", url=receiver.url + "/flaky", method="GET")], now=lambda: T - 30
    )
    tick_and_deliver(conn, settings, T + 0.2)
    [rec] = deliveries(client)
    assert rec["outcome"] == "retrying"
    assert [(a["attempt"], a["status"]) for a in rec["attempts"]] == [(1, 500)]
    assert rec.get("finished_at") is None
    assert [r["id"] for r in deliveries(client, outcome="retrying")] == [rec["id"]]
    assert deliveries(client, outcome="delivered") == []

    tick_and_deliver(conn, settings, T + 0.5)  # moves the retry (due at real time + backoff, before T) and delivers it
    [rec] = deliveries(client)
    assert rec["outcome"] == "delivered"
    assert [(a["attempt"], a["status"], a["error"]) for a in rec["attempts"]] == [(1, 500, None), (2, 200, None)]
    assert parse(rec["attempts"][0]["started_at"]) < parse(rec["attempts"][1]["started_at"])
    assert deliveries(client, outcome="retrying") == []
    assert len(receiver.to("/flaky")) == 2


def test_failed_records_have_status_or_error_class_and_message(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, delivery_max_retries=1)
    receiver.on("/down", (503, 0), (500, 0))
    refused = f"http://127.0.0.1:{free_port()}/nobody"
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron="* * * * *", url=receiver.url + "/down", method="POST"),
            Trigger(cron="* * * * *", url=refused, method="GET"),
        ],
        now=lambda: T - 30,
    )
    tick_and_deliver(conn, settings, T + 0.2, T + 0.5)
    by_job = {r["jobId"]: r for r in deliveries(client)}
    assert len(by_job) == 2
    down, conn_refused = by_job["ws:0"], by_job["ws:1"]
    assert down["outcome"] == "failed" and down["finished_at"]
    assert [(a["attempt"], a["status"], a["error"]) for a in down["attempts"]] == [(1, 503, None), (2, 500, None)]
    assert conn_refused["outcome"] == "failed"
    for a in conn_refused["attempts"]:
        assert a["status"] is None
        # The error class (not "timeout": the refusal came at once) and its message.
        assert a["error"] == "ClientConnectorError", a
        assert "connect" in a["message"].lower() and a["duration_ms"] < 1000
    assert len(conn_refused["attempts"]) == 2


def test_missed_record(client: TestClient, conn: Redis, settings: Settings, receiver: Receiver) -> None:
    assert settings.misfire_grace_seconds == 60
    store.replace(conn, "ws", [Trigger(cron="0 * * * *", url=receiver.url + "/m", method="GET")], now=lambda: T - 30)
    result = ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=T + 61)
    assert (result.fired, result.missed) == (0, 1)
    worker.run_worker(settings, conn, burst=True)
    [rec] = deliveries(client)
    assert rec["id"] == "ws:0@2027-01-15T08:00:00Z"
    assert rec["scheduled_at"] == "2027-01-15T08:00:00Z"
    assert rec["outcome"] == "missed"
    assert rec["attempts"] == []
    assert receiver.requests == []
    assert [r["id"] for r in deliveries(client, outcome="missed")] == [rec["id"]]


def test_blocked_record(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    """Stored while private targets were allowed, delivered by a runtime that refuses them."""
    store.replace(conn, "ws", [Trigger(cron="* * * * *", url=receiver.url + "/b", method="GET")], now=lambda: T - 30)
    strict = make_settings(redis_url, allow_private_targets=False)
    tick_and_deliver(conn, strict, T + 0.2, T + 0.5, T + 1)
    [rec] = deliveries(client)
    assert rec["outcome"] == "blocked" and rec["finished_at"]
    [attempt] = rec["attempts"]  # final at once: never retried
    assert attempt["error"] == "blocked"
    assert attempt["status"] is None
    assert "refused" in attempt["message"] and "127.0.0.1" in attempt["message"]
    assert receiver.requests == []
    assert conn.zcard(keys.RETRIES) == 0
    assert [r["id"] for r in deliveries(client, outcome="blocked")] == [rec["id"]]


# --- order, filters, limit -----------------------------------------------------------------------


def test_newest_first_filters_and_limit(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, delivery_max_retries=0)
    receiver.on("/bad", *[(500, 0)] * 10)
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron="* * * * *", url=receiver.url + "/ok", method="GET"),
            Trigger(cron="* * * * *", url=receiver.url + "/bad", method="GET"),
        ],
        now=lambda: T - 30,
    )
    tick_and_deliver(conn, settings, T + 0.1, T + 60.1, T + 120.1)
    records = deliveries(client)
    assert len(records) == 6
    scheduled = [parse(r["scheduled_at"]) for r in records]
    assert scheduled == sorted(scheduled, reverse=True)
    assert sorted(set(scheduled)) == [T, T + 60, T + 120]

    ok = deliveries(client, trigger=0)
    assert [r["scheduled_at"] for r in ok] == [_iso(T + 120), _iso(T + 60), _iso(T)]
    assert {r["jobId"] for r in ok} == {"ws:0"} and {r["outcome"] for r in ok} == {"delivered"}
    bad = deliveries(client, trigger=1)
    assert {r["jobId"] for r in bad} == {"ws:1"} and {r["outcome"] for r in bad} == {"failed"} and len(bad) == 3
    assert [r["jobId"] for r in deliveries(client, outcome="delivered")] == ["ws:0"] * 3
    assert [r["jobId"] for r in deliveries(client, outcome="failed")] == ["ws:1"] * 3
    assert deliveries(client, trigger=0, outcome="failed") == []
    assert deliveries(client, trigger=7) == []
    assert deliveries(client, outcome="blocked") == []
    assert [r["scheduled_at"] for r in deliveries(client, limit=2)] == [_iso(T + 120)] * 2
    assert [r["scheduled_at"] for r in deliveries(client, trigger=1, limit=2)] == [_iso(T + 120), _iso(T + 60)]
    assert deliveries(client, ws="other") == []
    for params in ({"limit": 0}, {"limit": 1001}, {"trigger": -1}, {"trigger": "x"}, {"outcome": "bogus"}):
        r = client.get("/api/workspaces/ws/deliveries", params=params)
        assert r.status_code == 400, params
        assert r.json()["success"] is False


def test_a_missed_record_is_ordered_by_its_scheduled_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """Hourly A is missed at T (found late at T+30.5); B fires at T+30. Newest first: B, then A."""
    settings = make_settings(redis_url, misfire_grace_seconds=20)
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron="0 * * * *", url=receiver.url + "/a", method="GET"),
            Trigger(cron="30 0 8 * * *", url=receiver.url + "/b", method="GET"),
        ],
        now=lambda: T - 10,
    )
    tick_and_deliver(conn, settings, T + 30.5)
    records = deliveries(client)
    assert [(r["jobId"], r["outcome"], r["scheduled_at"]) for r in records] == [
        ("ws:1", "delivered", _iso(T + 30)),
        ("ws:0", "missed", _iso(T)),
    ]


# --- cap and retention, per workspace --------------------------------------------------------------


def _counts(conn: Redis, ws: str) -> tuple[int, int]:
    return conn.hlen(keys.records(ws)), conn.zcard(keys.history(ws))


def test_history_cap_is_per_workspace(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    # The cap bounds what the two keep counts do not: records of firings still retrying.
    settings = make_settings(
        redis_url,
        history_max_per_workspace=3,
        completed_keep_count=1,
        failed_keep_count=1,
        delivery_backoff_seconds=10**9,  # the retries stay pending (ticks run at T, ahead of the clock)
        worker_concurrency=5,
    )
    receiver.on("/a", *[(500, 0)] * 10)
    receiver.on("/b", *[(500, 0)] * 10)
    store.replace(conn, "a", [Trigger(cron="* * * * * *", url=receiver.url + "/a", method="GET")], now=lambda: T)
    store.replace(conn, "b", [Trigger(cron="*/2 * * * * *", url=receiver.url + "/b", method="GET")], now=lambda: T)
    tick_and_deliver(conn, settings, *(T + k + 0.1 for k in range(1, 6)))
    assert len(receiver.to("/a")) == 5 and len(receiver.to("/b")) == 2
    a = deliveries(client, ws="a")
    assert [(r["scheduled_at"], r["outcome"]) for r in a] == [(_iso(T + k), "retrying") for k in (5, 4, 3)]
    assert [r["scheduled_at"] for r in deliveries(client, ws="b")] == [_iso(T + 4), _iso(T + 2)]
    assert _counts(conn, "a") == (3, 3) and _counts(conn, "b") == (2, 2)  # no orphaned record


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
    assert _counts(conn, "ws") == (1100, 1100)
    assert conn.zscore(keys.failed("ws"), f"ws:{1199 % 7}@{_iso(T + 1199)}") is not None  # the newest kept


def test_completed_and_failed_keep_counts_are_per_workspace(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(
        redis_url, completed_keep_count=2, failed_keep_count=1, delivery_max_retries=0, worker_concurrency=5
    )
    receiver.on("/a-bad", *[(500, 0)] * 10)
    receiver.on("/b-bad", *[(500, 0)] * 10)
    store.replace(
        conn,
        "b",
        [
            Trigger(cron="2 * * * * *", url=receiver.url + "/b-ok", method="GET"),
            Trigger(cron="2 * * * * *", url=receiver.url + "/b-bad", method="GET"),
        ],
        now=lambda: T,
    )
    store.replace(
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
    store.replace(
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


# --- response bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("excerpt", "body"), [(5, '{"ok"'), (0, None), (256, '{"ok":true}')])
def test_response_body_is_cut_to_the_excerpt_size(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver, excerpt: int, body: str | None
) -> None:
    settings = make_settings(redis_url, response_excerpt_bytes=excerpt)
    store.replace(conn, "ws", [Trigger(cron="* * * * *", url=receiver.url + "/x", method="GET")], now=lambda: T - 30)
    tick_and_deliver(conn, settings, T + 0.2)
    [rec] = deliveries(client)
    assert rec["outcome"] == "delivered"
    assert rec["attempts"][0]["body"] == body


# --- retention of workspaces that get no new records ------------------------------------------------

ONCE = "1 0 8 15 1 *"  # T + 1 only


def _sweep(conn: Redis, settings: Settings, now: float) -> int:
    """A whole retention sweep, step by step as the scheduler runs it; histories dropped."""
    cursor, dropped = retention.sweep_step(conn, settings, now=now)
    while cursor:
        cursor, more = retention.sweep_step(conn, settings, now=now, cursor=cursor)
        dropped += more
    return dropped


def _fire_once(conn: Redis, settings: Settings, ws: str, receiver: Receiver) -> None:
    receiver.on(f"/{ws}/bad", (500, 0))
    triggers = [
        Trigger(cron=ONCE, url=f"{receiver.url}/{ws}/ok", method="GET"),
        Trigger(cron=ONCE, url=f"{receiver.url}/{ws}/bad", method="GET"),
    ]
    store.replace(conn, ws, triggers, now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.5)


def test_a_quiet_workspace_loses_delivered_records_after_the_keep_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    _fire_once(conn, settings, "quiet", receiver)  # then nothing more: its triggers fire next year
    assert sorted(r["outcome"] for r in deliveries(client, ws="quiet")) == ["delivered", "failed"]

    assert _sweep(conn, settings, time.time() + 60) == 0
    assert sorted(r["outcome"] for r in deliveries(client, ws="quiet")) == ["delivered", "failed"]
    # An hour later the delivered record goes, though the workspace got no record since; the failed
    # one stays (failed records are kept by count only, as in the original).
    assert _sweep(conn, settings, time.time() + 3601) == 0
    assert [r["outcome"] for r in deliveries(client, ws="quiet")] == ["failed"]
    assert _counts(conn, "quiet") == (1, 1)


def test_a_workspace_without_triggers_loses_its_whole_history_after_the_keep_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    _fire_once(conn, settings, "gone", receiver)
    _fire_once(conn, settings, "kept", receiver)
    assert client.delete("/api/workspaces/gone/triggers").status_code == 200

    # Its history stays readable for the keep time after its last record...
    assert _sweep(conn, settings, time.time() + 60) == 0
    assert sorted(r["outcome"] for r in deliveries(client, ws="gone")) == ["delivered", "failed"]
    # ...then all of it goes, failed records too; a workspace with triggers keeps its failed ones.
    assert _sweep(conn, settings, time.time() + 3601) == 1
    assert deliveries(client, ws="gone") == []
    assert not conn.exists(keys.records("gone"), keys.history("gone"), keys.done("gone"), keys.failed("gone"))
    assert [r["outcome"] for r in deliveries(client, ws="kept")] == ["failed"]


def test_redis_does_not_grow_as_workspaces_come_and_go(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)

    def workspace_keys() -> set[str]:
        return {
            k.decode()
            for k in conn.scan_iter("sa:*")
            if k.decode().split(":")[1] in ("ws", "rec", "hist", "done", "failed")
        }

    for i in range(10):  # at most one workspace with triggers at any time
        _fire_once(conn, settings, f"tenant-{i}", receiver)
        assert client.delete(f"/api/workspaces/tenant-{i}/triggers").status_code == 200
    assert len(receiver.requests) == 20
    assert len(workspace_keys()) == 10 * 4  # each history, kept for the keep time
    assert _sweep(conn, settings, time.time() + 3601) == 10
    assert workspace_keys() == set()


def test_the_scheduler_process_loop_runs_the_sweep(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    _fire_once(conn, settings, "gone", receiver)
    store.delete(conn, "gone")
    later = time.time() + 3601
    scheduling.TriggerScheduler(settings, connection=conn, clock=lambda: later).run(burst=True)
    assert deliveries(client, ws="gone") == []
