"""`scheduler_api.storage.triggers`: replace / list / delete against a real (private) Redis."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from redis import Redis

from scheduler_api import cron
from scheduler_api.embedded_redis import free_port
from scheduler_api.errors import StoreUnavailable
from scheduler_api.storage import connection, edits, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

NOW = 1_767_603_540.0  # 2026-01-05T08:59:00Z, a Monday


def make(url: str, cron_: str = "0 9 * * 1-5", method: str = "GET", **extra: Any) -> Trigger:
    return Trigger.model_validate({"cron": cron_, "url": url, "method": method, **extra})


def schedule_members(conn: Redis, workspace_id: str) -> dict[str, float]:
    prefix = f"{workspace_id}:"
    return {
        m.decode(): score
        for m, score in conn.zrange(keys.SCHEDULE, 0, -1, withscores=True)
        if m.decode().startswith(prefix)
    }


def test_replace_writes_definitions_and_schedule(conn: Redis) -> None:
    triggers = [
        make("https://a.example/0", method="POST", payload={"k": 1}, headers={"Authorization": "Bearer t"}),
        make("https://a.example/1", cron_="*/10 * * * * *"),
    ]
    removed, stored = edits.replace(conn, "ws", triggers, now=lambda: NOW)
    assert removed == 0
    assert [(s.id, s.job_id, s.job_name) for s in stored] == [
        ("0", "ws:0", "ws-trigger-0"),
        ("1", "ws:1", "ws-trigger-1"),
    ]
    assert stored[0].next_run_at == NOW + 60  # 09:00:00
    assert stored[1].next_run_at == NOW + 10

    definitions = {k.decode(): json.loads(v) for k, v in conn.hgetall("sa:ws:ws").items()}
    assert set(definitions) == {"0", "1"}
    assert definitions["0"]["url"] == "https://a.example/0"
    assert definitions["0"]["method"] == "POST"
    assert definitions["0"]["payload"] == {"k": 1}
    assert definitions["0"]["headers"] == {"Authorization": "Bearer t"}
    assert definitions["1"]["cron"] == "*/10 * * * * *"
    assert definitions["0"]["v"] != definitions["1"]["v"]
    assert schedule_members(conn, "ws") == {"ws:0": NOW + 60, "ws:1": NOW + 10}


def test_list_returns_list_order_with_next_run(conn: Redis) -> None:
    urls = [f"https://a.example/{i}" for i in range(12)]  # 12 > 9: the list's order, not the ids' text order
    edits.replace(conn, "ws", [make(u) for u in urls], now=lambda: NOW)
    listed = store.list_triggers(conn, "ws")
    assert [t.id for t in listed] == [str(i) for i in range(12)]
    assert [t.url for t in listed] == urls
    assert all(t.next_run_at == NOW + 60 for t in listed)
    assert all(t.headers == {} and t.payload is None for t in listed)


def test_replace_removes_the_old_list_entirely(conn: Redis) -> None:
    edits.replace(conn, "ws", [make(f"https://old.example/{i}") for i in range(5)])
    old_versions = {t.id: t.version for t in store.list_triggers(conn, "ws")}
    removed, stored = edits.replace(
        conn, "ws", [make("https://new.example/0"), make("https://new.example/1", cron_="0 10 * * *")]
    )
    assert removed == 5
    listed = store.list_triggers(conn, "ws")
    assert [t.url for t in listed] == ["https://new.example/0", "https://new.example/1"]
    # Ids 0 and 1 are kept: a new url keeps the version (queued firings go to the new url), a new
    # cron makes a new one (queued firings of the old schedule are dropped).
    assert listed[0].version == old_versions["0"] and listed[1].version != old_versions["1"]
    assert conn.hlen("sa:ws:ws") == 2
    assert set(schedule_members(conn, "ws")) == {"ws:0", "ws:1"}


def test_unknown_workspace_is_empty(conn: Redis) -> None:
    assert store.list_triggers(conn, "nobody") == []
    assert edits.delete(conn, "nobody") == 0


def test_delete(conn: Redis) -> None:
    edits.replace(conn, "ws", [make("https://a.example/0"), make("https://a.example/1")])
    assert edits.delete(conn, "ws") == 2
    assert store.list_triggers(conn, "ws") == []
    assert not conn.exists("sa:ws:ws")
    assert schedule_members(conn, "ws") == {}
    assert edits.delete(conn, "ws") == 0


def test_workspaces_are_isolated(conn: Redis) -> None:
    # "ws" is a prefix of "ws2" and "ws.x": the store must not confuse them.
    edits.replace(conn, "ws2", [make("https://b.example/0"), make("https://b.example/1")])
    edits.replace(conn, "ws.x", [make("https://c.example/0")])
    before_b = conn.hgetall("sa:ws:ws2")
    before_c = conn.hgetall("sa:ws:ws.x")
    edits.replace(conn, "ws", [make("https://a.example/0")])
    edits.replace(conn, "ws", [make("https://a.example/9")])
    edits.delete(conn, "ws")
    assert conn.hgetall("sa:ws:ws2") == before_b
    assert conn.hgetall("sa:ws:ws.x") == before_c
    assert set(schedule_members(conn, "ws2")) == {"ws2:0", "ws2:1"}
    assert set(schedule_members(conn, "ws.x")) == {"ws.x:0"}
    assert [t.url for t in store.list_triggers(conn, "ws2")] == ["https://b.example/0", "https://b.example/1"]


def test_load_definitions(conn: Redis) -> None:
    edits.replace(conn, "ws", [make("https://a.example/0", headers={"X-Key": "v"}), make("https://a.example/1")])
    found = store.load_definitions(conn, ["ws:0", "ws:1", "ws:7", "other:0"])
    assert set(found) == {"ws:0", "ws:1"}
    assert found["ws:0"].url == "https://a.example/0"
    assert found["ws:0"].headers == {"X-Key": "v"}
    assert found["ws:1"].job_id == "ws:1"


def test_stored_trigger_json_round_trip() -> None:
    original = store.StoredTrigger("ws", 3, "abc", "@hourly", "https://x/", "PUT", {"a": [1]}, {"H": "v"}, 12.5)
    back = store.StoredTrigger.from_json("ws", 3, original.to_json(), 12.5)
    assert back == original


def test_concurrent_replaces_end_in_one_submitted_list(conn: Redis, redis_url: str) -> None:
    """20 threads replace the same workspace while another reads it: never a mix, one list wins."""
    edits.replace(conn, "other", [make("https://other.example/0")])
    other_before = (conn.hgetall("sa:ws:other"), schedule_members(conn, "other"))
    lists = {n: [f"https://list{n}.example/{i}" for i in range(n + 1)] for n in range(20)}
    start = threading.Barrier(21)
    done = threading.Event()
    seen: list[list[str]] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            with connection.connect(redis_url, timeout=5) as c:
                for _ in range(3):
                    edits.replace(c, "ws", [make(u) for u in lists[n]])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            with connection.connect(redis_url, timeout=5) as c:
                start.wait()
                while True:
                    finished = done.is_set()
                    seen.append([t.url for t in store.list_triggers(c, "ws")])
                    if finished:
                        break
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    read_thread = threading.Thread(target=reader)
    read_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    done.set()
    read_thread.join(30)
    assert not errors
    submitted = list(lists.values())
    assert len(seen) > 1
    for urls in seen:
        assert urls == [] or urls in submitted, urls
    final = [t.url for t in store.list_triggers(conn, "ws")]
    assert final in submitted
    assert conn.hlen("sa:ws:ws") == len(final)
    assert set(schedule_members(conn, "ws")) == {f"ws:{i}" for i in range(len(final))}
    assert (conn.hgetall("sa:ws:other"), schedule_members(conn, "other")) == other_before


def test_unreachable_redis_raises_store_unavailable() -> None:
    conn = connection.connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            edits.replace(conn, "ws", [make("https://a.example/")])
        with pytest.raises(StoreUnavailable):
            store.list_triggers(conn, "ws")
        with pytest.raises(StoreUnavailable):
            edits.delete(conn, "ws")
    finally:
        conn.close()


def test_next_run_matches_cron(conn: Redis) -> None:
    _, stored = edits.replace(conn, "ws", [make("https://a.example/", cron_="@daily")], now=lambda: NOW)
    assert stored[0].next_run_at == cron.parse("@daily").next_after(NOW) == NOW + 15 * 3600 + 60
