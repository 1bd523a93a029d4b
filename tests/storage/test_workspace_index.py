"""`scheduler_api.storage.workspace_index`: the index of workspaces kept by every trigger write,
its pages and counts by prefix, the backfill at the API's start, and the workspace summaries."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.api import create_app
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys, workspace_index
from scheduler_api.triggers import Trigger
from tests.support.api import post_triggers
from tests.support.clock import YEARLY
from tests.support.engine import fire_ok_and_bad_once
from tests.support.factories import make_engine_settings, numbered_trigger
from tests.support.receiver import Receiver


def create(client: TestClient, ws: str, n: int = 1) -> None:
    r = post_triggers(client, ws, [numbered_trigger(i) for i in range(n)])
    assert r.status_code == 200, r.text


def test_workspaces_created_and_deleted_through_the_api_are_listed_in_order(client: TestClient, conn: Redis) -> None:
    for ws in ("beta", "alpha", "alpine"):
        create(client, ws)
    assert workspace_index.count(conn) == 3
    assert client.delete("/api/workspaces/beta/triggers").status_code == 200
    assert workspace_index.page(conn) == ["alpha", "alpine"] and workspace_index.count(conn) == 2
    create(client, "beta", 2)
    create(client, "beta", 1)  # a replace that keeps triggers keeps the workspace listed once
    assert workspace_index.page(conn) == ["alpha", "alpine", "beta"]
    # Removing the last trigger one at a time removes the workspace too.
    assert client.delete("/api/workspaces/beta/triggers/t0").status_code == 200
    assert workspace_index.page(conn) == ["alpha", "alpine"]


def test_a_page_by_prefix_and_after(client: TestClient, conn: Redis) -> None:
    ids = ["a-1", "a-2", "a-3", "a.b", "ab", "b", "a"]
    for ws in ids:
        create(client, ws)
    assert workspace_index.page(conn, prefix="a-") == ["a-1", "a-2", "a-3"]
    assert workspace_index.count(conn, prefix="a-") == 3 and workspace_index.count(conn, prefix="a") == 6
    assert workspace_index.page(conn, prefix="a", limit=2) == ["a", "a-1"]
    assert workspace_index.page(conn, prefix="a", after="a-1", limit=2) == ["a-2", "a-3"]
    assert workspace_index.page(conn, prefix="a", after="a-3") == ["a.b", "ab"]
    assert workspace_index.page(conn, prefix="a", after="ab") == []
    assert workspace_index.page(conn, prefix="a-", after="") == ["a-1", "a-2", "a-3"]  # `after` before the prefix
    assert workspace_index.page(conn, prefix="zz") == [] and workspace_index.count(conn, prefix="zz") == 0
    assert workspace_index.page(conn, after="ab") == ["b"]
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        workspace_index.page(conn, limit=0)


def test_the_api_backfills_workspaces_written_before_the_index_once(settings: Settings, conn: Redis) -> None:
    for ws in ("old-1", "old-2", "emptied"):
        edits.replace(conn, ws, [Trigger(cron=YEARLY, url="https://example.com/x", method="GET")])
    edits.replace(conn, "emptied", [])
    conn.delete(keys.WORKSPACES)  # as stored by a version without the index
    conn.hset(keys.workspace_settings("settings-only"), "doc", "{}")
    assert workspace_index.count(conn) == 0
    with TestClient(create_app(settings)):
        assert workspace_index.page(conn) == ["old-1", "old-2"]
    assert workspace_index.backfill(conn) is None  # the index exists: no second SCAN
    conn.delete(keys.WORKSPACES)
    assert workspace_index.backfill(conn) == 2  # deleting it rebuilds it


def test_summaries_of_a_page(redis_url: str, conn: Redis, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)  # a 500 is a final failure
    with TestClient(create_app(settings)) as client:
        put = client.put("/api/workspaces/a/settings", json={"auto_disable_after_failures": 5})
        assert put.status_code == 200, put.text
        fire_ok_and_bad_once(conn, settings, "a", receiver)  # one delivered, one failed
        create(client, "b", 3)
        assert client.post("/api/workspaces/b/pause").status_code == 200
    found = workspace_index.summaries(conn, ["a", "b", "none"], now=time.time())

    def next_run(ws: str, n: int) -> float:
        scores = conn.zmscore(keys.SCHEDULE, [keys.job_id(ws, t.decode()) for t in conn.hkeys(keys.workspace(ws))])
        assert len(scores) == n
        return min(s for s in scores if s is not None)

    a, b = found["a"], found["b"]
    assert (a.triggers, a.paused, a.failing, a.delivered_24h, a.failed_24h) == (2, False, 1, 1, 1)
    assert a.next_run == next_run("a", 2)
    assert (b.triggers, b.paused, b.failing, b.delivered_24h, b.failed_24h) == (3, True, 0, 0, 0)
    assert b.next_run == next_run("b", 3)
    assert found["none"] == workspace_index.WorkspaceSummary(0, False, 0, 0, 0, None)
    assert workspace_index.summaries(conn, [], now=time.time()) == {}


@pytest.fixture
def scoped_client(redis_url: str, conn: Redis) -> Iterator[TestClient]:
    settings = make_engine_settings(
        redis_url, api_keys="k1-secret-value-long-enough:team-*", max_workspaces_per_scope=2
    )
    with TestClient(create_app(settings), headers={"Authorization": "Bearer k1-secret-value-long-enough"}) as c:
        yield c


def test_a_scope_quota_is_built_from_the_index(scoped_client: TestClient, conn: Redis) -> None:
    for ws in ("team-a", "team-b", "other"):  # written before the scope's quotas were built
        edits.replace(conn, ws, [Trigger(cron=YEARLY, url="https://example.com/x", method="GET")])
    r = post_triggers(scoped_client, "team-c", [numbered_trigger(0)])
    assert r.status_code == 403 and "MAX_WORKSPACES_PER_SCOPE" in r.text, r.text  # two of the scope exist already
    assert set(conn.hkeys(keys.quota_keys("team-*")[0])) == {b"team-a", b"team-b"}


def test_listing_and_summaries_never_scan_keys(client: TestClient, conn: Redis) -> None:
    for i in range(30):
        create(client, f"ws-{i:02d}")
    conn.config_resetstat()
    ids = workspace_index.page(conn, prefix="ws-1", limit=5)
    assert ids == [f"ws-1{i}" for i in range(5)] and workspace_index.count(conn, prefix="ws-") == 30
    assert set(workspace_index.summaries(conn, ids, now=time.time())) == set(ids)
    used = {name.removeprefix("cmdstat_").split("|")[0] for name in conn.info("commandstats")}
    assert "scan" not in used and "keys" not in used, used
    assert {"zrangebylex", "zlexcount"} <= used
