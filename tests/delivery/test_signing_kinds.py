"""Every kind of request the service sends is signed with its workspace's secret (Standard Webhooks):
a run-now firing, a scheduled one, its replay and the failure and recovery alerts, checked at the
local receiver with the real `standardwebhooks` package and the secret the API shows; a replay
keeps the firing's `webhook-id`; another workspace's secret verifies none of them.
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from scheduler_api.storage import edits, firings
from scheduler_api.triggers import Trigger
from tests.support.arrivals import verifies
from tests.support.clock import ONCE, T, iso_second
from tests.support.engine import drive, tick_and_deliver
from tests.support.factories import WS, make_engine_settings
from tests.support.receiver import Receiver, headers_of


def test_run_now_scheduled_replay_and_alert_requests_are_all_signed(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)
    alerts = {"alerts": {"url": receiver.url + "/alerts", "after_failures": 1}}
    assert client.put(f"/api/workspaces/{WS}/settings", json=alerts).status_code == 200
    hook = Trigger(cron=ONCE, url=receiver.url + "/hook", method="POST", payload={"n": 1})
    edits.replace(conn, WS, [hook], now=lambda: T)  # its one scheduled run: T + 1

    run = client.post(f"/api/workspaces/{WS}/triggers/0/run")  # run-now, at the real time
    assert run.status_code == 202, run.text
    run_id = run.json()["firing_id"]

    def run_delivered() -> bool:
        rec = firings.get_record(conn, run_id)
        return rec is not None and rec["outcome"] == "delivered"

    drive(conn, Queue(settings.queue_name, connection=conn), settings, run_delivered)
    receiver.on("/hook", (500, 0))
    tick_and_deliver(conn, settings, T + 1.5, T + 2)  # the scheduled firing fails: a failing alert
    scheduled_id = f"{WS}:0@{iso_second(T + 1)}"
    assert client.post(f"/api/workspaces/{WS}/deliveries/{scheduled_id}/replay").status_code == 202
    tick_and_deliver(conn, settings, T + 3, T + 3.5)  # the replay is delivered (a replay is not counted)
    again = client.post(f"/api/workspaces/{WS}/triggers/0/run").json()["firing_id"]

    def again_delivered() -> bool:
        rec = firings.get_record(conn, again)
        return rec is not None and rec["outcome"] == "delivered"

    drive(conn, Queue(settings.queue_name, connection=conn), settings, again_delivered)  # a recovered alert
    tick_and_deliver(conn, settings, T + 4)

    ran, scheduled, replayed, _ = receiver.to("/hook")
    failing, recovered = receiver.to("/alerts")
    assert [r.json()["type"] for r in (failing, recovered)] == ["trigger.failing", "trigger.recovered"]
    assert headers_of(ran)["webhook-id"] == run_id
    assert headers_of(scheduled)["webhook-id"] == headers_of(replayed)["webhook-id"] == scheduled_id
    assert headers_of(replayed)["x-scheduler-replay"] == "1"
    secret = client.get(f"/api/workspaces/{WS}/signing-secret").json()["secret"]
    other = client.get("/api/workspaces/other/signing-secret").json()["secret"]
    for r in (ran, scheduled, replayed, failing, recovered):
        h = headers_of(r)
        assert h["webhook-id"] == h["idempotency-key"], r.path
        assert verifies(secret, r), r.path
        assert not verifies(other, r), r.path
