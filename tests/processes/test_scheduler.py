"""`scheduler-api scheduler` as real processes (with real workers): two schedulers fire every second
once, a scheduler exits cleanly on SIGTERM, a restarted one fires only the latest missed time, and
pause / resume / run now reach the running processes.

Every child is stopped (SIGTERM, then SIGKILL) when the test ends, pass or fail; its output goes to
a file under the test's tmp_path and is shown when an assertion fails. Six-field crons have seconds
first: ``* * * * * *`` fires every second.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.api import jobs
from tests.support.clock import EVERY_SECOND, YEARLY
from tests.support.processes import (
    Procs,
    drained,
    header,
    live_schedulers,
    records,
    scheduled_second,
    snapshot,
    start_scheduler,
    start_worker,
    stop,
    wait_until,
)
from tests.support.receiver import Received, Receiver, headers_of

# Scheduler log lines: what a tick committed, and the run times it skipped after an outage.
FIRED = re.compile(r"tick: fired=(\d+)")


MISSED = re.compile(r"trigger (\S+): run times from (\S+) before (\S+) were missed")


@pytest.mark.slow
def test_two_schedulers_one_worker_fire_every_second_once_without_gaps(conn, receiver, procs):
    # Different poll intervals, so that which scheduler is first after each second changes over
    # the run (with equal ones the same process would win every second) and both commit firings.
    schedulers = [
        start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="0.2"),
        start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="0.3"),
    ]
    start_worker(procs, conn)
    n = 20
    edits.replace(
        conn,
        "ws",
        [Trigger(cron=EVERY_SECOND, url=f"{receiver.url}/t/{i}", method="POST", payload={"i": i}) for i in range(n)],
    )
    time.sleep(4.5)
    for s in schedulers:
        assert s.alive(), procs.logs()
        assert stop(s, procs, 5) == 0, procs.logs()
    wait_until(lambda: drained(conn), 15, "every batch to be delivered", procs)

    requests = [r for r in snapshot(receiver) if r.path.startswith("/t/")]
    ids = [header(r, "Idempotency-Key") for r in requests]
    dupes = {k: c for k, c in Counter(ids).items() if c > 1}
    assert not dupes, f"delivered more than once: {dupes}\n{procs.logs()}"

    per_trigger: dict[int, list[int]] = defaultdict(list)
    for r in requests:
        i = int(r.path.rsplit("/", 1)[1])
        second = scheduled_second(r)
        assert header(r, "Idempotency-Key") == f"ws:{i}@{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%SZ}"
        assert header(r, "X-Scheduler-Trigger") == f"ws:{i}"
        assert header(r, "X-Scheduler-Attempt") == "1"
        per_trigger[i].append(second)
    assert sorted(per_trigger) == list(range(n)), f"triggers never delivered: {set(range(n)) - set(per_trigger)}"
    for i, seconds in per_trigger.items():
        seen = sorted(seconds)
        assert len(seen) >= 3, f"trigger {i} fired only at {seen}\n{procs.logs()}"
        gaps = sorted(set(range(seen[0], seen[-1] + 1)) - set(seen))
        assert not gaps, f"trigger {i}: seconds {gaps} never delivered (got {seen})\n{procs.logs()}"

    recs = records(conn)
    assert set(recs) == set(ids)
    assert {r["outcome"] for r in recs.values()} == {"delivered"}
    assert conn.zcard(keys.done("ws")) == len(ids) and conn.zcard(keys.failed("ws")) == 0
    # What the schedulers say they committed is exactly what arrived: no firing lost in between.
    fired = [sum(map(int, FIRED.findall(s.log()))) for s in schedulers]
    assert sum(fired) == len(ids), f"fired per scheduler {fired}, delivered {len(ids)}\n{procs.logs()}"


def test_scheduler_exits_cleanly_on_sigterm(conn, procs):
    # A long interval: the stop must not wait for the next poll.
    sched = start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="30")
    time.sleep(0.3)
    t0 = time.monotonic()
    assert stop(sched, procs, 5) == 0, procs.logs()
    assert time.monotonic() - t0 < 2.0, procs.logs()
    assert "scheduler stopped" in sched.log()
    assert live_schedulers(conn) == 0, "the scheduler registers its death"


@pytest.mark.slow
def test_restarted_scheduler_fires_only_the_most_recent_missed_time(conn, receiver, procs):
    start_worker(procs, conn)
    first = start_scheduler(procs, conn)
    n = 5
    edits.replace(conn, "ws", [Trigger(cron=EVERY_SECOND, url=f"{receiver.url}/m/{i}", method="GET") for i in range(n)])
    time.sleep(2.5)
    assert stop(first, procs, 5) == 0, procs.logs()
    time.sleep(3.0)  # the outage: three or four run times of every trigger pass unseen
    restart = time.time()
    second = start_scheduler(procs, conn, MISFIRE_GRACE_SECONDS="60")
    time.sleep(2.0)
    assert stop(second, procs, 5) == 0, procs.logs()
    wait_until(lambda: drained(conn), 10, "every batch to be delivered", procs)

    per_trigger: dict[int, list[int]] = defaultdict(list)
    for r in snapshot(receiver):
        per_trigger[int(r.path.rsplit("/", 1)[1])].append(scheduled_second(r))
    warned = {m[0]: (m[1], m[2]) for m in MISSED.findall(second.log())}
    assert sorted(per_trigger) == list(range(n)), procs.logs()
    for i, seconds in per_trigger.items():
        seen = sorted(seconds)
        assert len(seen) == len(set(seen)), f"trigger {i}: a run time fired twice: {seen}"
        jumps = [(a, b) for a, b in zip(seen, seen[1:], strict=False) if b - a > 1]
        assert len(jumps) == 1, f"trigger {i}: expected one gap (the outage), got {seen}\n{procs.logs()}"
        last_before, caught_up = jumps[0]
        assert caught_up - last_before >= 3, f"trigger {i}: the outage should skip >= 2 run times: {seen}"
        # No catch-up burst of the old run times, just the most recent one at the first tick.
        assert caught_up >= int(restart), f"trigger {i}: fired a stale run time {caught_up} (restart {restart})"
        iso = datetime.fromtimestamp
        assert warned.get(f"ws:{i}") == (
            f"{iso(last_before + 1, UTC):%Y-%m-%dT%H:%M:%SZ}",
            f"{iso(caught_up, UTC):%Y-%m-%dT%H:%M:%SZ}",
        ), f"trigger {i}: {seen}\n{second.log()}"
    assert {r["outcome"] for r in records(conn).values()} == {"delivered"}, "within the grace nothing is 'missed'"


def _second(r: Received) -> int:
    return int(datetime.fromisoformat(headers_of(r)["x-scheduler-scheduled-at"]).timestamp())


@pytest.mark.slow
def test_pause_and_resume_with_the_real_scheduler_and_worker(
    client: TestClient, conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    edits.replace(conn, "p", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/p", method="GET")])
    edits.replace(conn, "q", [Trigger(cron=EVERY_SECOND, url=receiver.url + "/q", method="GET")])
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


@pytest.mark.slow
def test_run_now_with_the_real_scheduler_and_worker(
    client: TestClient, conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    receiver.on("/run", (500, 0))
    edits.replace(conn, "ws", [Trigger(cron=YEARLY, url=receiver.url + "/run", method="GET")])
    r = client.post("/api/workspaces/ws/triggers/0/run")
    assert r.status_code == 202
    firing_id = r.json()["firing_id"]

    def delivered() -> dict[str, Any] | None:
        recs = client.get("/api/workspaces/ws/deliveries").json()["deliveries"]
        return recs[0] if recs and recs[0]["outcome"] == "delivered" else None

    rec = wait_until(delivered, 15, "the manual firing to be delivered after one retry", procs)
    assert rec["id"] == firing_id
    assert [a["status"] for a in rec["attempts"]] == [500, 200]
    assert [headers_of(q)["idempotency-key"] for q in receiver.to("/run")] == [firing_id, firing_id]
