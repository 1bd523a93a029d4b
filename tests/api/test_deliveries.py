"""`scheduler_api.api.routes.deliveries`: `GET /api/workspaces/{id}/deliveries?trigger=&outcome=&limit=`.

One record per firing, newest scheduled time first, with each attempt's start, duration, status or
error class and message. Outcomes: delivered, retrying, failed, missed, blocked.

The engine runs in-process: `tick` with an injected clock at T (in the future of the real clock, so
retries - due at real time + backoff - are moved by the next tick) and a burst worker delivering to
the local receiver.
"""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.cron import iso as _iso
from scheduler_api.delivery import worker
from scheduler_api.embedded_redis import free_port
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.api import deliveries
from tests.support.clock import T, parse
from tests.support.engine import tick_and_deliver
from tests.support.factories import make_settings
from tests.support.receiver import Receiver


def test_delivered_record(client: TestClient, conn: Redis, settings: Settings, receiver: Receiver) -> None:
    edits.replace(
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
    edits.replace(
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
    edits.replace(
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
    edits.replace(conn, "ws", [Trigger(cron="0 * * * *", url=receiver.url + "/m", method="GET")], now=lambda: T - 30)
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
    edits.replace(conn, "ws", [Trigger(cron="* * * * *", url=receiver.url + "/b", method="GET")], now=lambda: T - 30)
    strict = make_settings(redis_url, allow_private_targets=False)
    tick_and_deliver(conn, strict, T + 0.2, T + 0.5, T + 1)
    [rec] = deliveries(client)
    assert rec["outcome"] == "blocked" and rec["finished_at"]
    [attempt] = rec["attempts"]  # final at once: never retried
    assert attempt["error"] == "blocked"
    assert attempt["status"] is None
    assert attempt["message"] == "blocked by the SSRF guard (host 127.0.0.1)"  # the reason: operator log only
    assert receiver.requests == []
    assert conn.zcard(keys.RETRIES) == 0
    assert [r["id"] for r in deliveries(client, outcome="blocked")] == [rec["id"]]


def test_newest_first_filters_and_limit(client: TestClient, conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = make_settings(redis_url, delivery_max_retries=0)
    receiver.on("/bad", *[(500, 0)] * 10)
    edits.replace(
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
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"trigger": "a b"},
        {"trigger": "x:y"},
        {"trigger": "x" * 65},
        {"outcome": "bogus"},
    ):
        r = client.get("/api/workspaces/ws/deliveries", params=params)
        assert r.status_code == 400, params
        assert r.json()["success"] is False


def test_a_missed_record_is_ordered_by_its_scheduled_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """Hourly A is missed at T (found late at T+30.5); B fires at T+30. Newest first: B, then A."""
    settings = make_settings(redis_url, misfire_grace_seconds=20)
    edits.replace(
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
