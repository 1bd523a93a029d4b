"""Replay against real processes: a `scheduler-api serve` answering the replay, a scheduler pushing
it and a worker sending it to the local receiver, which sees the original firing again."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from redis import Redis

from scheduler_api.embedded_redis import free_port
from tests.support.processes import (
    Child,
    Procs,
    clean_env,
    header,
    records,
    start_scheduler,
    start_worker,
    wait_until,
)
from tests.support.receiver import Receiver


def test_a_failed_firing_replayed_through_real_processes(
    tmp_path: Path, redis_url: str, conn: Redis, procs: Procs, spawned: list[Child], receiver: Receiver
) -> None:
    port = free_port()
    env = clean_env(ALLOW_PRIVATE_TARGETS="true", PORT=str(port), HOST="127.0.0.1", REDIS_URL=redis_url)
    server = Child([sys.executable, "-m", "scheduler_api.cli", "serve"], env=env, cwd=tmp_path, log=tmp_path / "serve")
    spawned.append(server)
    server.wait_http(f"http://127.0.0.1:{port}/health", timeout=20)
    start_scheduler(procs, conn)
    start_worker(procs, conn, DELIVERY_MAX_RETRIES="0")
    receiver.on("/r", (500, 0))
    trigger = {"id": "t", "cron": "* * * * * *", "url": receiver.url + "/r", "method": "GET", "max_firings": 1}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        assert api.put("/api/workspaces/ws/triggers/t", json=trigger).status_code == 201
        [(firing_id, rec)] = wait_until(
            lambda: [(k, r) for k, r in records(conn).items() if r["outcome"] == "failed"], 15, "a failed record", procs
        )
        r = api.post(f"/api/workspaces/ws/deliveries/{firing_id}/replay")
        assert r.status_code == 202, r.text
        assert r.json() == {"success": True, "firing_id": firing_id, "replay": 1}
        wait_until(lambda: records(conn)[firing_id]["outcome"] == "delivered", 15, "the replay delivered", procs)
        first, again = receiver.to("/r")
        assert header(again, "Idempotency-Key") == header(first, "Idempotency-Key") == firing_id
        assert header(again, "X-Scheduler-Scheduled-At") == header(first, "X-Scheduler-Scheduled-At")
        assert header(again, "X-Scheduler-Replay") == "1" and header(first, "X-Scheduler-Replay") is None
        got = api.get("/api/workspaces/ws/deliveries").json()["deliveries"]
        assert [(d["id"], d["replays"], len(d["attempts"])) for d in got] == [(firing_id, 1, 2)]
        assert rec["attempts"][0]["status"] == 500
