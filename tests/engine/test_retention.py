"""`scheduler_api.engine.retention`: the sweep over every workspace's history, for workspaces that get
no new records.
"""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.engine import retention
from scheduler_api.settings import Settings
from scheduler_api.storage import keys
from tests.support.api import deliveries
from tests.support.engine import fire_ok_and_bad_once
from tests.support.factories import make_settings
from tests.support.receiver import Receiver
from tests.support.redis_state import history_counts


def _sweep(conn: Redis, settings: Settings, now: float) -> int:
    """A whole retention sweep, step by step as the scheduler runs it; histories dropped."""
    cursor, dropped = retention.sweep_step(conn, settings, now=now)
    while cursor:
        cursor, more = retention.sweep_step(conn, settings, now=now, cursor=cursor)
        dropped += more
    return dropped


def test_a_quiet_workspace_loses_delivered_records_after_the_keep_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    fire_ok_and_bad_once(conn, settings, "quiet", receiver)  # then nothing more: its triggers fire next year
    assert sorted(r["outcome"] for r in deliveries(client, ws="quiet")) == ["delivered", "failed"]

    assert _sweep(conn, settings, time.time() + 60) == 0
    assert sorted(r["outcome"] for r in deliveries(client, ws="quiet")) == ["delivered", "failed"]
    # An hour later the delivered record goes, though the workspace got no record since; the failed
    # one stays (failed records are kept by count only, as in the original).
    assert _sweep(conn, settings, time.time() + 3601) == 0
    assert [r["outcome"] for r in deliveries(client, ws="quiet")] == ["failed"]
    assert history_counts(conn, "quiet") == (1, 1)


def test_a_workspace_without_triggers_loses_its_whole_history_after_the_keep_time(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    fire_ok_and_bad_once(conn, settings, "gone", receiver)
    fire_ok_and_bad_once(conn, settings, "kept", receiver)
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
        fire_ok_and_bad_once(conn, settings, f"tenant-{i}", receiver)
        assert client.delete(f"/api/workspaces/tenant-{i}/triggers").status_code == 200
    assert len(receiver.requests) == 20
    assert len(workspace_keys()) == 10 * 4  # each history, kept for the keep time
    assert _sweep(conn, settings, time.time() + 3601) == 10
    assert workspace_keys() == set()


def test_the_sweep_reads_indexes_not_keys_and_finds_retired_and_old_histories(
    client: TestClient, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """A deleted workspace's history waits in sa:retired until the sweep drops it; a history stored
    before the index existed is found by the one-time backfill; no sweep step SCANs."""
    settings = make_settings(redis_url, completed_keep_seconds=3600, delivery_max_retries=0)
    fire_ok_and_bad_once(conn, settings, "gone", receiver)
    fire_ok_and_bad_once(conn, settings, "kept", receiver)
    assert client.delete("/api/workspaces/gone/triggers").status_code == 200
    assert conn.zrange(keys.RETIRED, 0, -1) == [b"gone"]
    assert conn.zrange(keys.WORKSPACES, 0, -1) == [b"kept"]
    # A history of a workspace deleted before sa:retired existed: found once by the backfill.
    fire_ok_and_bad_once(conn, settings, "older", receiver)
    assert client.delete("/api/workspaces/older/triggers").status_code == 200
    conn.zrem(keys.RETIRED, "older")
    assert retention.backfill_retired(conn) == 1 and retention.backfill_retired(conn) is None
    assert sorted(conn.zrange(keys.RETIRED, 0, -1)) == [b"gone", b"older"]

    scans = int(conn.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))
    assert _sweep(conn, settings, time.time() + 60) == 0  # too recent: kept
    assert _sweep(conn, settings, time.time() + 3601) == 2  # both retired histories go
    assert int(conn.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)) == scans
    assert conn.zcard(keys.RETIRED) == 0
    assert deliveries(client, ws="gone") == [] and deliveries(client, ws="older") == []
    assert [r["outcome"] for r in deliveries(client, ws="kept")] == ["failed"]
