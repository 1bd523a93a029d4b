"""Failure alerts and auto-disable (scheduler_api.delivery.alerts, the counting in lua/record.lua)
through the real scheduler tick and worker, against the real receiver: once per transition with a
flaky target, auto-disable and re-enable through the API, the SSRF guard on the alert url."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys, workspace_settings
from scheduler_api.storage.history import list_records
from scheduler_api.storage.workspace_settings import WorkspaceSettings, consecutive_failures
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, T, iso_second
from tests.support.engine import tick_and_deliver
from tests.support.factories import WS, make_engine_settings
from tests.support.receiver import Receiver, headers_of


def setup(conn: Redis, receiver: Receiver, **settings: Any) -> None:
    """Trigger "0" of WS fires every second (from T + 1) to /t; the workspace's settings as given."""
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url=f"{receiver.url}/t", method="POST")], now=lambda: T)
    workspace_settings.write(conn, WS, WorkspaceSettings(**settings))


def alerts_of(conn: Redis) -> list[dict[str, Any]]:
    """The workspace's alert records, oldest first."""
    return [r for r in reversed(list_records(conn, WS, limit=1000)) if r.get("kind") == "alert"]


def engine_settings(redis_url: str, **overrides: Any) -> Settings:
    return make_engine_settings(redis_url, delivery_max_retries=0, **overrides)


def test_one_alert_per_transition_with_a_flaky_target(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    """Three failures then successes, alerts after 2: one failing alert (at the 2nd failure, not the
    3rd) and one recovered alert (at the first success, not the next ones)."""
    settings = engine_settings(redis_url)
    setup(conn, receiver, alert_url=f"{receiver.url}/alerts", alert_after=2)
    receiver.on("/t", (500, 0), (500, 0), (500, 0))
    tick_and_deliver(conn, settings, *(T + i + 0.5 for i in range(1, 8)))

    assert len(receiver.to("/t")) == 7
    sent = receiver.to("/alerts")
    bodies = [r.json() for r in sent]
    assert [(b["type"], b["consecutive_failures"]) for b in bodies] == [
        ("trigger.failing", 2),
        ("trigger.recovered", 3),
    ]
    failing, recovered = bodies
    assert {k: failing[k] for k in ("workspace_id", "id", "jobId")} == {"workspace_id": WS, "id": "0", "jobId": "ws:0"}
    assert failing["last_record"]["id"] == f"ws:0@{iso_second(T + 2)}"
    assert failing["last_record"]["outcome"] == "failed"
    assert recovered["last_record"]["id"] == f"ws:0@{iso_second(T + 4)}"
    assert recovered["last_record"]["outcome"] == "delivered"
    for r in sent:  # sent like a delivery: POST, JSON, the alert job, its id as Idempotency-Key
        h = headers_of(r)
        assert r.method == "POST" and h["content-type"] == "application/json"
        assert h["x-scheduler-trigger"] == "ws:~alert" and h["idempotency-key"].startswith("ws:~alert@0.")
    records = alerts_of(conn)
    assert [(r["alert"]["type"], r["outcome"]) for r in records] == [
        ("trigger.failing", "delivered"),
        ("trigger.recovered", "delivered"),
    ]
    assert records[0]["alert"] == {"type": "trigger.failing", "id": "0", "url": f"{receiver.url}/alerts"}
    assert {h["idempotency-key"] for h in map(headers_of, sent)} == {r["id"] for r in records}
    assert consecutive_failures(conn, WS, "0") == 0


def test_a_failing_alert_is_retried_and_raises_no_alert(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    """The alert url answers 500 then 200: the alert is retried (default policy) and its failure is
    never counted, so nothing else is raised."""
    settings = make_engine_settings(redis_url, delivery_max_retries=1)
    setup(conn, receiver, alert_url=f"{receiver.url}/alerts", alert_after=1)
    receiver.on("/t", *([(500, 0)] * 20))
    receiver.on("/alerts", (500, 0))
    tick_and_deliver(conn, settings, *(T + i + 0.5 for i in range(1, 7)))

    sent = receiver.to("/alerts")
    assert [r.json()["type"] for r in sent] == ["trigger.failing", "trigger.failing"]
    assert [headers_of(r)["x-scheduler-attempt"] for r in sent] == ["1", "2"]
    assert len({headers_of(r)["idempotency-key"] for r in sent}) == 1  # one alert, two attempts
    (record,) = alerts_of(conn)
    assert record["outcome"] == "delivered" and len(record["attempts"]) == 2
    assert not conn.hexists(keys.state(WS), "~alert!")


def test_auto_disable_then_enable_again(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = engine_settings(redis_url)
    setup(conn, receiver, alert_url=f"{receiver.url}/alerts", alert_after=5, disable_after=2)
    receiver.on("/t", *([(500, 0)] * 2))
    version = json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")["v"]
    etag = conn.get(keys.etag(WS))
    tick_and_deliver(conn, settings, T + 1.5, T + 2.5, T + 3.5, T + 4.5)

    assert len(receiver.to("/t")) == 2  # disabled after the second failure: nothing fires after it
    (disabled,) = [r.json() for r in receiver.to("/alerts")]
    assert (disabled["type"], disabled["consecutive_failures"]) == ("trigger.disabled", 2)
    stored = json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")
    assert stored["on"] is False and stored["v"] == version  # the version is kept
    assert stored["off"]["reason"] == "auto-disabled after 2 consecutive failed firings"
    assert abs(stored["off"]["at"] - time.time()) < 60  # the worker's clock (real time)
    assert conn.get(keys.etag(WS)) != etag

    with TestClient(create_app(settings)) as client:
        shown = client.get(f"/api/workspaces/{WS}/triggers/0").json()["job"]
        assert (shown["enabled"], shown["state"]) == (False, "disabled")
        assert client.patch(f"/api/workspaces/{WS}/triggers/0", json={"enabled": True}).status_code == 200
        shown = client.get(f"/api/workspaces/{WS}/triggers/0").json()["job"]
        assert (shown["enabled"], shown["state"]) == (True, "active")
        assert "disabled_reason" not in shown
    assert consecutive_failures(conn, WS, "0") == 0
    assert "off" not in json.loads(conn.hget(keys.workspace(WS), "0") or b"{}")

    tick_and_deliver(conn, settings, T + 5.5, T + 6.5)  # fires again, delivered: recovered
    assert len(receiver.to("/t")) == 4
    assert [r.json()["type"] for r in receiver.to("/alerts")] == ["trigger.disabled", "trigger.recovered"]


def test_without_settings_nothing_is_counted(conn: Redis, redis_url: str, receiver: Receiver) -> None:
    settings = engine_settings(redis_url)
    setup(conn, receiver)
    receiver.on("/t", *([(500, 0)] * 3))
    tick_and_deliver(conn, settings, T + 1.5, T + 2.5, T + 3.5)
    assert consecutive_failures(conn, WS, "0") == 0 and not receiver.to("/alerts")


def test_an_alert_url_the_ssrf_guard_refuses_gets_a_record_and_no_request(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """With private targets refused, the trigger's deliveries and the alert to the receiver
    (127.0.0.1) are blocked: a blocked alert record, no request at all, and no alert about the alert."""
    settings = engine_settings(redis_url, allow_private_targets=False)
    setup(conn, receiver, alert_url=f"{receiver.url}/alerts", alert_after=1)
    tick_and_deliver(conn, settings, T + 1.5, T + 2.5, T + 3.5)

    assert receiver.requests == []
    (record,) = alerts_of(conn)
    assert record["outcome"] == "blocked" and record["alert"]["type"] == "trigger.failing"
    assert record["attempts"][0]["message"] == "blocked by the SSRF guard (host 127.0.0.1)"
    assert consecutive_failures(conn, WS, "0") == 3
    assert not conn.hexists(keys.state(WS), "~alert!")
