"""An auto-disabled trigger as the API shows it: ``enabled: false``, ``state: "disabled"``,
``disabled_reason`` and ``disabled_at`` in its view and in the list, the ``trigger.disabled`` alert's
body; re-enabled by ``PATCH {"enabled": true}``, which drops both fields and resets the count."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import edits
from scheduler_api.storage.workspace_settings import consecutive_failures
from scheduler_api.triggers import Trigger
from tests.support.api import jobs
from tests.support.clock import EVERY_SECOND, T, iso_second, parse
from tests.support.engine import tick_and_deliver
from tests.support.factories import WS, make_engine_settings
from tests.support.receiver import Receiver


def test_the_view_of_an_auto_disabled_trigger_until_it_is_enabled_again(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)
    body = {"alerts": {"url": receiver.url + "/alerts", "after_failures": 5}, "auto_disable_after_failures": 2}
    assert client.put(f"/api/workspaces/{WS}/settings", json=body).status_code == 200
    edits.replace(conn, WS, [Trigger(cron=EVERY_SECOND, url=receiver.url + "/t", method="GET")], now=lambda: T)
    receiver.on("/t", (500, 0), (503, 0))
    before = time.time()
    tick_and_deliver(conn, settings, T + 1.5, T + 2.5, T + 3.5)

    assert len(receiver.to("/t")) == 2
    shown = client.get(f"/api/workspaces/{WS}/triggers/0").json()["job"]
    assert (shown["enabled"], shown["state"], shown["paused"]) == (False, "disabled", True)
    assert shown["disabled_reason"] == "auto-disabled after 2 consecutive failed firings"
    assert shown["disabled_at"].endswith("Z") and before - 1 <= parse(shown["disabled_at"]) <= time.time() + 1
    [listed] = jobs(client, WS)
    assert (listed["disabled_reason"], listed["disabled_at"]) == (shown["disabled_reason"], shown["disabled_at"])
    [alert] = [r.json() for r in receiver.to("/alerts")]
    assert {k: alert[k] for k in ("type", "workspace_id", "id", "jobId", "consecutive_failures")} == {
        "type": "trigger.disabled",
        "workspace_id": WS,
        "id": "0",
        "jobId": f"{WS}:0",
        "consecutive_failures": 2,
    }
    assert alert["last_record"]["id"] == f"{WS}:0@{iso_second(T + 2)}"
    assert alert["last_record"]["attempts"][0]["status"] == 503

    r = client.patch(f"/api/workspaces/{WS}/triggers/0", json={"enabled": True})
    assert r.status_code == 200, r.text
    shown = client.get(f"/api/workspaces/{WS}/triggers/0").json()["job"]
    assert (shown["enabled"], shown["state"]) == (True, "active")
    assert "disabled_reason" not in shown and "disabled_at" not in shown
    assert consecutive_failures(conn, WS, "0") == 0
