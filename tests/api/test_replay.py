"""`POST /api/workspaces/{ws}/deliveries/{firing_id}/replay` and `POST .../deliveries/replay`
(scheduler_api.api.routes.deliveries, scheduler_api.storage.replay): a recorded firing sent again as
itself, through the real worker to the local receiver; the same record gains the new attempts.

The engine runs in-process with the injected clock at T (tests/support/engine.py): a replay goes to
the outbox at the real time, so the next tick at T + something pushes it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from scheduler_api.triggers import Trigger
from tests.support.api import deliveries
from tests.support.assertions import assert_error
from tests.support.clock import ONCE, YEARLY, T, iso_second
from tests.support.engine import tick_and_deliver
from tests.support.factories import make_settings
from tests.support.receiver import Receiver, headers_of

FIRING = f"ws:0@{iso_second(T + 1)}"


@pytest.fixture
def one_retry(redis_url: str, conn: Redis) -> Settings:
    return make_settings(redis_url, delivery_max_retries=1)


def replay(client: TestClient, firing_id: str = FIRING, ws: str = "ws") -> Any:
    return client.post(f"/api/workspaces/{ws}/deliveries/{firing_id}/replay")


def bulk(client: TestClient, ws: str = "ws", **body: Any) -> Any:
    return client.post(f"/api/workspaces/{ws}/deliveries/replay", json=body)


def record(conn: Redis, firing_id: str = FIRING) -> dict[str, Any]:
    rec = firings.get_record(conn, firing_id)
    assert rec is not None
    return rec


def fail_once(conn: Redis, settings: Settings, receiver: Receiver, **policy: Any) -> None:
    """Trigger 0 of ws fires once at T + 1 to /hook, which answers 500 twice: its record is failed
    after its two attempts (`one_retry`)."""
    receiver.on("/hook", (500, 0), (500, 0))
    trigger = Trigger(cron=ONCE, url=receiver.url + "/hook", method="POST", payload={"n": 1}, **policy)
    edits.replace(conn, "ws", [trigger], now=lambda: T)
    tick_and_deliver(conn, settings, T + 1.5, T + 2)
    assert record(conn)["outcome"] == "failed"


def test_replay_sends_the_firing_again_as_itself_and_appends_to_its_record(
    client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver
) -> None:
    fail_once(conn, one_retry, receiver)
    assert [r["id"] for r in deliveries(client, outcome="failed")] == [FIRING]

    r = replay(client)
    assert r.status_code == 202, r.text
    assert r.json() == {"success": True, "firing_id": FIRING, "replay": 1}
    tick_and_deliver(conn, one_retry, T + 3)

    first, _, again = receiver.to("/hook")
    h0, h = headers_of(first), headers_of(again)
    assert h["idempotency-key"] == h0["idempotency-key"] == FIRING
    assert h["x-scheduler-scheduled-at"] == h0["x-scheduler-scheduled-at"] == iso_second(T + 1)
    assert (h["x-scheduler-replay"], h["x-scheduler-attempt"]) == ("1", "3")
    assert "x-scheduler-replay" not in h0
    assert again.json() == {"n": 1}
    if "webhook-id" in h0:  # the Standard Webhooks id is the Idempotency-Key, replays included
        assert h["webhook-id"] == h0["webhook-id"] == FIRING

    rec = record(conn)
    assert (rec["id"], rec["outcome"], rec["replays"]) == (FIRING, "delivered", 1)
    assert [(a["attempt"], a["status"]) for a in rec["attempts"]] == [(1, 500), (2, 500), (3, 200)]
    assert rec["finished_at"]
    # The record moved from the failed retention set to the delivered one.
    assert deliveries(client, outcome="failed") == []
    assert [d["replays"] for d in deliveries(client, outcome="delivered")] == [1]
    assert conn.zscore(keys.failed("ws"), FIRING) is None and conn.zscore(keys.done("ws"), FIRING) is not None

    # A delivered firing can be replayed too: the number goes on.
    assert replay(client).json()["replay"] == 2
    tick_and_deliver(conn, one_retry, T + 4)
    last = headers_of(receiver.to("/hook")[-1])
    assert (last["x-scheduler-replay"], last["x-scheduler-attempt"], last["idempotency-key"]) == ("2", "4", FIRING)
    rec = record(conn)
    assert (rec["outcome"], rec["replays"], len(rec["attempts"])) == ("delivered", 2, 4)


def test_a_replay_uses_the_triggers_current_definition(
    client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver
) -> None:
    fail_once(conn, one_retry, receiver)
    edits.replace(
        conn, "ws", [Trigger(cron=ONCE, url=receiver.url + "/new", method="PUT", payload={"n": 2})], now=lambda: T
    )
    assert replay(client).status_code == 202
    tick_and_deliver(conn, one_retry, T + 3)
    [sent] = receiver.to("/new")
    assert sent.method == "PUT" and sent.json() == {"n": 2}
    assert headers_of(sent)["idempotency-key"] == FIRING
    assert record(conn)["outcome"] == "delivered"


def test_a_replay_that_fails_again_is_retried_and_stays_one_record(
    client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver
) -> None:
    fail_once(conn, one_retry, receiver)
    receiver.on("/hook", (503, 0), (500, 0))
    assert replay(client).status_code == 202
    tick_and_deliver(conn, one_retry, T + 3)
    rec = record(conn)
    assert rec["outcome"] in ("retrying", "failed") and rec["replays"] == 1
    assert [a["status"] for a in rec["attempts"]][:3] == [500, 500, 503]
    if rec["outcome"] == "retrying":
        # In progress: another replay is refused until it has a final outcome.
        assert_error(replay(client), 409, "Conflict")
        tick_and_deliver(conn, one_retry, T + 4)
    assert record(conn)["outcome"] == "failed"
    assert [r["id"] for r in deliveries(client, outcome="failed")] == [FIRING]


def test_a_missed_firing_can_be_replayed(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    edits.replace(conn, "ws", [Trigger(cron=ONCE, url=receiver.url + "/m", method="GET")], now=lambda: T)
    tick_and_deliver(conn, settings, T + 1 + 61)  # later than MISFIRE_GRACE_SECONDS
    assert record(conn)["outcome"] == "missed" and receiver.to("/m") == []
    assert replay(client).json()["replay"] == 1
    tick_and_deliver(conn, settings, T + 63)
    [sent] = receiver.to("/m")
    assert headers_of(sent)["x-scheduler-attempt"] == "1"
    rec = record(conn)
    assert (rec["outcome"], rec["replays"], [a["status"] for a in rec["attempts"]]) == ("delivered", 1, [200])
    assert deliveries(client, outcome="missed") == []


def test_replay_refusals(client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver) -> None:
    fail_once(conn, one_retry, receiver)
    # No such record, or a firing of another workspace (its id names it): 404, never a leak.
    for firing_id in (
        f"ws:0@{iso_second(T + 61)}",
        "ws:nope@2027-01-15T08:00:01Z",
        "nothing",
        f"other:0@{iso_second(T + 1)}",
    ):
        body = assert_error(replay(client, firing_id), 404, "Delivery record not found")
        assert body["details"][0]["path"] == "firing_id"
    edits.replace(conn, "other", [Trigger(cron=ONCE, url=receiver.url + "/o", method="GET")], now=lambda: T)
    tick_and_deliver(conn, one_retry, T + 1.5)
    assert firings.get_record(conn, f"other:0@{iso_second(T + 1)}") is not None
    assert_error(replay(client, f"other:0@{iso_second(T + 1)}"), 404)
    assert replay(client, f"other:0@{iso_second(T + 1)}", ws="other").status_code == 202

    # A replay not yet sent: the next one waits for it (409), nothing more is enqueued.
    assert replay(client).status_code == 202
    before = conn.zcard(keys.OUTBOX)
    body = assert_error(replay(client), 409, "Conflict")
    assert "in progress" in body["details"][0]["message"]
    assert conn.zcard(keys.OUTBOX) == before
    tick_and_deliver(conn, one_retry, T + 3)
    assert record(conn)["replays"] == 1

    # The trigger is gone: 409, the record stays.
    edits.replace(conn, "ws", [], now=lambda: T)
    body = assert_error(replay(client), 409, "Conflict")
    assert "no longer exists" in body["details"][0]["message"]
    assert record(conn)["outcome"] == "delivered"


def test_a_replay_dropped_before_it_is_sent_leaves_the_record(
    client: TestClient, conn: Redis, one_retry: Settings, receiver: Receiver
) -> None:
    fail_once(conn, one_retry, receiver)
    before = record(conn)
    assert replay(client).status_code == 202
    # Rescheduled before the worker sends it: the worker drops the replay (a new version), the record stays.
    v2 = Trigger(cron=YEARLY, url=receiver.url + "/v2", method="GET")
    edits.replace(conn, "ws", [v2], now=lambda: T)
    tick_and_deliver(conn, one_retry, T + 3)
    assert receiver.to("/v2") == [] and len(receiver.to("/hook")) == 2
    assert record(conn) == before
    assert replay(client).json()["replay"] == 1  # nothing pending any more
    tick_and_deliver(conn, one_retry, T + 4)
    assert len(receiver.to("/v2")) == 1 and record(conn)["replays"] == 1


def test_a_replay_obeys_the_overlap_rule(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    receiver.on("/s", (500, 0), (500, 0))
    no_retry = settings.model_copy(update={"delivery_max_retries": 0})
    trigger = Trigger(cron="* * * * *", url=receiver.url + "/s", method="GET", overlap="skip")
    edits.replace(conn, "ws", [trigger], now=lambda: T - 30)
    tick_and_deliver(conn, no_retry, T + 0.2, T + 60.2)
    a, b = f"ws:0@{iso_second(T)}", f"ws:0@{iso_second(T + 60)}"
    assert record(conn, a)["outcome"] == record(conn, b)["outcome"] == "failed"

    assert replay(client, a).status_code == 202
    # The replay is the trigger's active firing until it has finished: another one waits.
    body = assert_error(replay(client, b), 409, "Conflict")
    assert "overlap" in body["details"][0]["message"]
    tick_and_deliver(conn, no_retry, T + 61)
    assert record(conn, a)["outcome"] == "delivered"
    assert replay(client, b).status_code == 202
    tick_and_deliver(conn, no_retry, T + 62)
    assert record(conn, b)["outcome"] == "delivered"


def test_bulk_replay_by_outcome_trigger_time_and_limit(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    no_retry = settings.model_copy(update={"delivery_max_retries": 0})
    receiver.on("/a", *[(500, 0)] * 3)
    receiver.on("/b", (500, 0))
    triggers = [
        Trigger(id="a", cron="* * * * *", url=receiver.url + "/a", method="GET"),
        Trigger(id="b", cron="* * * * *", url=receiver.url + "/b", method="GET"),
        Trigger(id="c", cron="* * * * *", url=receiver.url + "/c", method="GET"),
    ]
    edits.replace(conn, "ws", triggers, now=lambda: T - 30)
    tick_and_deliver(conn, no_retry, T + 0.2, T + 60.2, T + 120.2)  # a fails 3 times, b once, c delivers
    assert len(deliveries(client, outcome="failed")) == 4

    r = bulk(client, trigger="a", since=iso_second(T + 60), until=iso_second(T + 120), limit=1)
    assert r.status_code == 202, r.text
    assert r.json() == {"success": True, "replayed": 1, "skipped": 0}
    tick_and_deliver(conn, no_retry, T + 121)
    assert record(conn, f"ws:a@{iso_second(T + 120)}")["replays"] == 1  # the newest first
    assert record(conn, f"ws:a@{iso_second(T + 60)}")["outcome"] == "failed"

    # Every failed one of the workspace: b's trigger is gone, so it is skipped.
    edits.replace(conn, "ws", triggers[:1] + triggers[2:], now=lambda: T + 121)
    assert bulk(client).json() == {"success": True, "replayed": 2, "skipped": 1}
    tick_and_deliver(conn, no_retry, T + 122)
    assert [r["jobId"] for r in deliveries(client, outcome="failed")] == ["ws:b"]
    assert bulk(client, outcome="delivered", trigger="c").json()["replayed"] == 3
    assert bulk(client, outcome="blocked").json() == {"success": True, "replayed": 0, "skipped": 0}


def test_bulk_replay_validation(client: TestClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"outcomes": "failed"}, "outcomes"),
        ({"outcome": "retrying"}, "outcome"),
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": 1800000000}, "until"),
        ({"trigger": "a/b"}, "trigger"),
        ({"since": "2027-01-15T08:00:00Z", "until": "2027-01-15T07:00:00Z"}, "until"),
    ]
    for body, path in cases:
        details = assert_error(bulk(client, **body), 400)["details"]
        assert [d["path"] for d in details] == [path], (body, details)


def test_replay_endpoints_are_scoped_to_the_keys_workspaces(redis_url: str, conn: Redis) -> None:
    from scheduler_api.api import create_app

    settings = make_settings(redis_url, api_keys="team-key-0123456789-abcd:team-*")
    with TestClient(create_app(settings)) as c:
        auth = {"Authorization": "Bearer team-key-0123456789-abcd"}
        for path in ("deliveries/replay", f"deliveries/{FIRING.replace('ws', 'other')}/replay"):
            assert_error(c.post(f"/api/workspaces/other/{path}", json={}, headers=auth), 403)
        assert c.post("/api/workspaces/team-a/deliveries/replay", json={}, headers=auth).status_code == 202
        assert_error(c.post(f"/api/workspaces/team-a/deliveries/{FIRING}/replay", headers=auth), 404)


def test_replays_count_as_run_now_calls(redis_url: str, conn: Redis, receiver: Receiver) -> None:
    from scheduler_api.api import create_app

    settings = make_settings(redis_url, run_now_per_minute=2, delivery_max_retries=1)
    fail_once(conn, settings, receiver)
    with TestClient(create_app(settings)) as c:
        assert_error(replay(c, f"ws:0@{iso_second(T + 61)}"), 404)  # not counted
        assert replay(c).status_code == 202
        assert bulk(c).status_code == 202
        r = replay(c)
        assert_error(r, 429, "Too many requests")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert_error(bulk(c), 429)
