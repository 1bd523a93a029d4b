"""Failure alerts through real processes: one scheduler and two `scheduler-api worker`s deliver the
firings of several failing triggers at once, and the workspace's alert url (the local receiver)
gets exactly one ``trigger.failing`` and one ``trigger.recovered`` per trigger, each signed with the
workspace's secret (checked with the real `standardwebhooks` package).

The targets hold each failing request 1.3 s and the triggers fire every second, so a trigger's
consecutive firings are in flight in both workers at once and their failures are recorded by both;
the count (lua/record.lua) must still raise each alert once, at the third failure.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from standardwebhooks import Webhook

from scheduler_api.storage import edits
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND
from tests.support.factories import WS
from tests.support.processes import Procs, records, start_scheduler, start_worker, wait_until
from tests.support.receiver import Received, Receiver, headers_of

TRIGGERS = 6
AFTER = 3


def failures_of(conn: Redis, index: int) -> int:
    return sum(1 for k, r in records(conn).items() if k.startswith(f"{WS}:{index}@") and r["outcome"] == "failed")


def delivered_of(conn: Redis, index: int) -> int:
    return sum(1 for k, r in records(conn).items() if k.startswith(f"{WS}:{index}@") and r["outcome"] == "delivered")


def alerts(receiver: Receiver, kind: str) -> list[Received]:
    return [r for r in receiver.to("/alert") if r.json()["type"] == kind]


@pytest.mark.slow
def test_two_workers_raise_each_alert_once_per_trigger_signed_with_the_workspace_secret(
    conn: Redis, client: TestClient, receiver: Receiver, procs: Procs
) -> None:
    start_scheduler(procs, conn)
    workers = [start_worker(procs, conn, DELIVERY_MAX_RETRIES="0") for _ in range(2)]
    settings = {"alerts": {"url": receiver.url + "/alert", "after_failures": AFTER}}
    assert client.put(f"/api/workspaces/{WS}/settings", json=settings).status_code == 200
    secret = client.get(f"/api/workspaces/{WS}/signing-secret").json()["secret"]
    for i in range(TRIGGERS):
        receiver.on(f"/t/{i}", *[(500, 1.3)] * 100)
    triggers = [Trigger(cron=EVERY_SECOND, url=f"{receiver.url}/t/{i}", method="GET") for i in range(TRIGGERS)]
    edits.replace(conn, WS, triggers)

    # Past the threshold by two more failures each: a second failing alert would have been raised.
    wait_until(lambda: len(alerts(receiver, "trigger.failing")) >= TRIGGERS, 20, "a failing alert each", procs)
    wait_until(lambda: all(failures_of(conn, i) >= AFTER + 2 for i in range(TRIGGERS)), 15, "more failures", procs)
    for i in range(TRIGGERS):
        receiver.on(f"/t/{i}")  # the targets recover: 200 at once
    wait_until(lambda: len(alerts(receiver, "trigger.recovered")) >= TRIGGERS, 15, "a recovered alert each", procs)
    wait_until(lambda: all(delivered_of(conn, i) >= 2 for i in range(TRIGGERS)), 10, "more deliveries", procs)

    sent = receiver.to("/alert")
    bodies = [r.json() for r in sent]
    failing = sorted((b["id"], b["consecutive_failures"]) for b in bodies if b["type"] == "trigger.failing")
    assert failing == [(str(i), AFTER) for i in range(TRIGGERS)], procs.logs()
    recovered = sorted(b["id"] for b in bodies if b["type"] == "trigger.recovered")
    assert recovered == [str(i) for i in range(TRIGGERS)], procs.logs()
    assert len(sent) == 2 * TRIGGERS, [(b["type"], b["id"]) for b in bodies]
    for r, body in zip(sent, bodies, strict=True):
        assert body["workspace_id"] == WS and body["jobId"] == f"{WS}:{body['id']}"
        expected = "failed" if body["type"] == "trigger.failing" else "delivered"
        assert body["last_record"]["outcome"] == expected
        h = headers_of(r)
        assert h["webhook-id"] == h["idempotency-key"]
        Webhook(secret).verify(r.body, r.headers)  # raises WebhookVerificationError if not signed by it
    # Both workers delivered the failing firings (the count was kept across processes).
    for w in workers:
        assert f"delivery workspace={WS}" in w.log(), procs.logs()
    kinds: dict[str, Any] = {}
    for rec in records(conn).values():
        if rec.get("kind") == "alert":
            kinds[rec["alert"]["type"]] = kinds.get(rec["alert"]["type"], 0) + 1
    assert kinds == {"trigger.failing": TRIGGERS, "trigger.recovered": TRIGGERS}
