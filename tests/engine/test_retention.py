"""`scheduler_api.engine.retention`: the sweep over every workspace's history, for workspaces that get
no new records.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.engine import retention
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import ONCE, T
from tests.support.engine import tick_and_deliver
from tests.support.factories import make_settings
from tests.support.receiver import Receiver


def deliveries(client: TestClient, ws: str = "ws", **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/workspaces/{ws}/deliveries", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "count", "deliveries"}
    assert body["success"] is True and body["workspace_id"] == ws
    assert body["count"] == len(body["deliveries"])
    records: list[dict[str, Any]] = body["deliveries"]
    return records


def _counts(conn: Redis, ws: str) -> tuple[int, int]:
    return conn.hlen(keys.records(ws)), conn.zcard(keys.history(ws))


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
    edits.replace(conn, ws, triggers, now=lambda: T)
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
