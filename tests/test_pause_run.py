"""Pause, resume, disabled triggers and "run now" (issue #7).

* `enabled: false` on a trigger, or `POST /api/workspaces/{id}/pause` for the whole workspace:
  the schedule keeps advancing (`next_run_at` moves on, `paused: true`), nothing fires, and
  nothing is recorded as missed; `/resume` fires again from the next run time (no backfill).
* `POST /api/workspaces/{id}/triggers/{index}/run` fires one firing now: 202 with its id, same
  headers and retries, a record in the history.

In-process with an injected clock, and with the real `scheduler` and `worker` processes.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from conftest import Received, Receiver, make_engine_settings, tick_and_deliver
from fastapi.testclient import TestClient
from processes import Procs, start_scheduler, start_worker, wait_until
from redis import Redis
from rq import Queue

from scheduler_api.cron import iso
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z, in the future of the real clock
EVERY_SECOND = "* * * * * *"
YEARLY = "0 0 1 1 *"


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return make_engine_settings(redis_url)


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")  # conftest


def h(r: Received) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items()}


def scheduled(rs: list[Received]) -> list[str]:
    return [h(r)["x-scheduler-scheduled-at"] for r in rs]


def jobs(client: TestClient, ws: str) -> list[dict[str, Any]]:
    r = client.get(f"/api/workspaces/{ws}/triggers")
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["jobs"]
    return out


# --- in-process ------------------------------------------------------------------------------------


def test_pause_and_resume_endpoints(client: TestClient, conn: Redis) -> None:
    for _ in range(2):  # idempotent
        r = client.post("/api/workspaces/ws/pause")
        assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": "ws", "paused": True}
    assert store.is_paused(conn, "ws") and not store.is_paused(conn, "other")
    for _ in range(2):
        r = client.post("/api/workspaces/ws/resume")
        assert r.status_code == 200 and r.json() == {"success": True, "workspace_id": "ws", "paused": False}
    assert not store.is_paused(conn, "ws")
    r = client.post("/api/workspaces/bad id!/pause")
    assert r.status_code in (400, 404) and r.json()["success"] is False


def test_paused_workspace_keeps_its_schedule_fires_nothing_and_resumes_without_backfill(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    store.replace(
        conn,
        "p",
        [
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/a", method="GET"),
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/off", method="GET", enabled=False),
            Trigger(cron="0 * * * *", url=receiver.url + "/hourly", method="GET"),
        ],
        now=lambda: T - 0.5,
    )
    store.replace(conn, "q", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/q", method="GET")], now=lambda: T - 0.5)
    assert client.post("/api/workspaces/p/pause").status_code == 200
    listed = jobs(client, "p")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(True, True), (False, True), (True, True)]
    assert [j["next_run_at"] for j in listed] == [iso(T)] * 3

    tick_and_deliver(conn, settings, T + 0.1, T + 1.1, T + 2.1)
    assert scheduled(receiver.to("/q")) == [iso(T), iso(T + 1), iso(T + 2)]  # another workspace fires
    assert receiver.to("/a") == [] and receiver.to("/off") == [] and receiver.to("/hourly") == []
    listed = jobs(client, "p")
    assert [j["next_run_at"] for j in listed] == [iso(T + 3), iso(T + 3), iso(T + 3600)]  # schedules advanced
    assert all(j["paused"] for j in listed)
    assert client.get("/api/workspaces/p/deliveries").json()["deliveries"] == []  # nothing "missed" either
    assert int(conn.hget(keys.METRICS, "missed") or 0) == 0

    assert client.post("/api/workspaces/p/resume").status_code == 200
    listed = jobs(client, "p")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(True, False), (False, True), (True, False)]
    tick_and_deliver(conn, settings, T + 3.1, T + 4.1)
    assert scheduled(receiver.to("/a")) == [iso(T + 3), iso(T + 4)]  # from the next run time, no backfill
    assert receiver.to("/off") == [] and receiver.to("/hourly") == []
    records = client.get("/api/workspaces/p/deliveries").json()["deliveries"]
    assert [(r["jobId"], r["scheduled_at"], r["outcome"]) for r in records] == [
        ("p:0", iso(T + 4), "delivered"),
        ("p:0", iso(T + 3), "delivered"),
    ]


def test_resume_after_a_long_pause_does_not_fire_the_passed_run_times(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    store.replace(conn, "p", [Trigger(cron="*/10 * * * *", url=receiver.url + "/s", method="GET")], now=lambda: T - 1)
    assert client.post("/api/workspaces/p/pause").status_code == 200
    tick_and_deliver(conn, settings, *(T + k * 600 + 0.5 for k in range(3)))  # T, T+10 min, T+20 min pass while paused
    assert jobs(client, "p")[0]["next_run_at"] == iso(T + 1800)
    assert client.post("/api/workspaces/p/resume").status_code == 200
    tick_and_deliver(conn, settings, T + 1799, T + 1800.5)
    assert scheduled(receiver.to("/s")) == [iso(T + 1800)]


def test_a_disabled_trigger_never_fires(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/on", method="GET"),
            Trigger(cron=EVERY_SECOND, url=receiver.url + "/off", method="GET", enabled=False),
        ],
        now=lambda: T - 0.5,
    )
    # Regular ticks, then late ones (the misfire path: the latest run time fires).
    tick_and_deliver(conn, settings, T + 0.1, T + 1.1, T + 5.5, T + 500.2)
    assert receiver.to("/off") == []
    assert scheduled(receiver.to("/on")) == [iso(T), iso(T + 1), iso(T + 5), iso(T + 500)]
    assert {r["jobId"] for r in client.get("/api/workspaces/ws/deliveries").json()["deliveries"]} == {"ws:0"}
    assert jobs(client, "ws")[1]["next_run_at"] == iso(T + 501)


def test_enabled_flag_through_the_api(client: TestClient) -> None:
    body = {
        "triggers": [
            {"cron": "0 9 * * *", "url": "https://example.com/a", "method": "GET", "enabled": False},
            {"cron": "0 9 * * *", "url": "https://example.com/b", "method": "GET"},
        ]
    }
    assert client.post("/api/workspaces/ws/triggers", json=body).status_code == 200
    listed = jobs(client, "ws")
    assert [(j["enabled"], j["paused"]) for j in listed] == [(False, True), (True, False)]
    assert listed[0]["next_run_at"] == listed[1]["next_run_at"]  # a disabled trigger keeps its schedule


def _drive(conn: Redis, settings: Settings, done: Any, timeout: float = 10.0) -> None:
    """Tick with the real clock and deliver until `done()`."""
    queue = Queue(settings.queue_name, connection=conn)
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        ticking.tick(conn, queue, settings, now=time.time())
        worker.run_worker(settings, conn, burst=True)
        time.sleep(0.01)


def test_run_now_fires_once_with_retries_and_a_history_record(
    client: TestClient, conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    receiver.on("/run", (503, 0))  # the first attempt fails, the retry succeeds
    store.replace(
        conn,
        "ws",
        [
            Trigger(cron=YEARLY, url=receiver.url + "/other", method="GET"),
            Trigger(
                cron=YEARLY,
                url=receiver.url + "/run",
                method="POST",
                payload={"x": 1},
                headers={"X-Custom": "v"},
            ),
        ],
    )
    before = time.time()
    r = client.post("/api/workspaces/ws/triggers/1/run")
    assert r.status_code == 202, r.text
    body = r.json()
    assert set(body) == {"success", "workspace_id", "jobId", "firing_id"}
    assert (body["success"], body["workspace_id"], body["jobId"]) == (True, "ws", "ws:1")
    firing_id = body["firing_id"]
    assert firing_id.startswith("ws:1@") and firing_id.endswith("Z")
    stamp = datetime.fromisoformat(firing_id.partition("@")[2]).timestamp()
    assert before - 0.01 <= stamp <= time.time() + 0.01

    def final() -> bool:
        rec = firings.get_record(conn, firing_id)
        return rec is not None and rec["outcome"] == "delivered"

    _drive(conn, settings, final)
    reqs = receiver.to("/run")
    assert [h(q)["x-scheduler-attempt"] for q in reqs] == ["1", "2"]
    assert {h(q)["idempotency-key"] for q in reqs} == {firing_id}
    assert all(q.json() == {"x": 1} and h(q)["x-custom"] == "v" for q in reqs)
    assert receiver.to("/other") == []
    [rec] = client.get("/api/workspaces/ws/deliveries", params={"trigger": 1}).json()["deliveries"]
    assert rec["id"] == firing_id and rec["outcome"] == "delivered"
    assert [a["status"] for a in rec["attempts"]] == [503, 200]
    # The schedule itself did not move.
    assert jobs(client, "ws")[1]["next_run_at"].endswith("-01-01T00:00:00Z")


def test_run_now_unknown_index_or_workspace_is_404(client: TestClient, conn: Redis) -> None:
    body = {"triggers": [{"cron": YEARLY, "url": "https://example.com/a", "method": "GET"}]}
    assert client.post("/api/workspaces/ws/triggers", json=body).status_code == 200
    size = conn.dbsize()
    for path in ("/api/workspaces/ws/triggers/1/run", "/api/workspaces/nobody/triggers/0/run"):
        r = client.post(path)
        assert r.status_code == 404, r.text
        assert r.json()["success"] is False and r.json()["details"][0]["path"] == "index"
    assert client.post("/api/workspaces/ws/triggers/-1/run").status_code == 400
    assert conn.dbsize() == size  # nothing enqueued


def test_a_manual_run_never_shares_an_id_with_a_scheduled_firing(
    conn: Redis, settings: Settings, receiver: Receiver
) -> None:
    """Run now at exactly the second a scheduled firing has: two firings, two ids, two records."""
    _, [stored] = store.replace(
        conn, "ws", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/x", method="GET")], now=lambda: T - 0.5
    )
    manual = firings.enqueue_now(conn, stored, now=T)
    assert manual == "ws:0@2027-01-15T08:00:00.000Z"
    tick_and_deliver(conn, settings, T + 0.1)
    assert sorted(h(r)["idempotency-key"] for r in receiver.to("/x")) == sorted([manual, "ws:0@2027-01-15T08:00:00Z"])
    assert firings.get_record(conn, manual) is not None
    assert firings.get_record(conn, "ws:0@2027-01-15T08:00:00Z") is not None


# --- the real scheduler and worker processes ----------------------------------------------------------


def _second(r: Received) -> int:
    return int(datetime.fromisoformat(h(r)["x-scheduler-scheduled-at"]).timestamp())


def test_pause_and_resume_with_the_real_scheduler_and_worker(
    client: TestClient, conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    store.replace(conn, "p", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/p", method="GET")])
    store.replace(conn, "q", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/q", method="GET")])
    wait_until(lambda: len(receiver.to("/p")) >= 2, 15, "deliveries before the pause", procs)

    assert client.post("/api/workspaces/p/pause").status_code == 200
    paused_at = time.time()
    time.sleep(0.5)
    first = jobs(client, "p")[0]
    time.sleep(2.0)
    last = jobs(client, "p")[0]
    resumed_at = time.time()
    assert client.post("/api/workspaces/p/resume").status_code == 200
    assert first["paused"] and last["paused"]
    assert datetime.fromisoformat(last["next_run_at"]).timestamp() >= (
        datetime.fromisoformat(first["next_run_at"]).timestamp() + 1.0
    ), (first, last)  # the schedule kept advancing
    wait_until(
        lambda: len([r for r in receiver.to("/p") if _second(r) > resumed_at]) >= 2,
        15,
        "deliveries after resume",
        procs,
    )

    during = [_second(r) for r in receiver.to("/p") if paused_at < _second(r) < resumed_at - 1]
    assert during == [], f"fired while paused: {during}\n{procs.logs()}"
    # What arrived during the pause was scheduled before it (in flight when it began).
    arrived = [_second(r) for r in receiver.to("/p") if paused_at + 0.5 < r.at < resumed_at]
    assert all(sec <= paused_at for sec in arrived), arrived
    seconds = [_second(r) for r in receiver.to("/p")]
    assert len(seconds) == len(set(seconds))  # each second once
    # The other workspace went on firing meanwhile.
    assert any(paused_at < _second(r) < resumed_at for r in receiver.to("/q"))


def test_run_now_with_the_real_scheduler_and_worker(
    client: TestClient, conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    receiver.on("/run", (500, 0))
    store.replace(conn, "ws", [Trigger(cron=YEARLY, url=receiver.url + "/run", method="GET")])
    r = client.post("/api/workspaces/ws/triggers/0/run")
    assert r.status_code == 202
    firing_id = r.json()["firing_id"]

    def delivered() -> dict[str, Any] | None:
        recs = client.get("/api/workspaces/ws/deliveries").json()["deliveries"]
        return recs[0] if recs and recs[0]["outcome"] == "delivered" else None

    rec = wait_until(delivered, 15, "the manual firing to be delivered after one retry", procs)
    assert rec["id"] == firing_id
    assert [a["status"] for a in rec["attempts"]] == [500, 200]
    assert [h(q)["idempotency-key"] for q in receiver.to("/run")] == [firing_id, firing_id]
