"""The firing engine as real processes: `scheduler-api scheduler` / `worker` and the plain `rq worker`.

Each test starts the service's own commands as child processes against the session's private
redis-server and the local `receiver`, then looks at what the receiver got and what was recorded
in Redis. Every child is stopped (SIGTERM, then SIGKILL) when the test ends, pass or fail; its
output goes to a file under the test's tmp_path and is shown when an assertion fails.

Six-field crons have seconds first: ``* * * * * *`` fires every second.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from processes import (
    DELIVERY_TIMEOUT,
    LEASE,
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
from redis import Redis
from rq import Queue

from scheduler_api import __version__
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

EVERY_SECOND = "* * * * * *"
# Scheduler log lines: what a tick committed, and the run times it skipped after an outage.
FIRED = re.compile(r"tick: fired=(\d+)")
MISSED = re.compile(r"trigger (\S+): run times from (\S+) before (\S+) were missed")


def once_at(ts: int) -> str:
    """A six-field cron that matches the single second `ts` (within a year)."""
    d = datetime.fromtimestamp(ts, UTC)
    return f"{d.second} {d.minute} {d.hour} {d.day} {d.month} *"


def enqueue_one_batch(conn: Redis, settings: Settings, triggers: list[Trigger], workspace: str = "ws") -> float:
    """Write `triggers` (crons for one second ~2 s ahead) and tick once in-process at that second:
    exactly one batch with one firing per trigger is pushed to RQ. Return the scheduled time."""
    _, stored = store.replace(conn, workspace, triggers)
    due = stored[0].next_run_at
    assert due is not None and all(s.next_run_at == due for s in stored)
    result = ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=due)
    assert (result.fired, result.pushed) == (len(triggers), 1), result
    return due


def once_triggers(n: int, url: str, **extra: Any) -> list[Trigger]:
    cron = once_at(int(time.time()) + 2)
    return [Trigger(cron=cron, url=url, method="POST", payload={"i": i}, **extra) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Tests


def test_two_schedulers_one_worker_fire_every_second_once_without_gaps(conn, receiver, procs):
    # Different poll intervals, so that which scheduler is first after each second changes over
    # the run (with equal ones the same process would win every second) and both commit firings.
    schedulers = [
        start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="0.2"),
        start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="0.3"),
    ]
    start_worker(procs, conn)
    n = 20
    store.replace(
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


def test_sigkilled_worker_mid_request_firing_is_delivered_again_by_another_worker(conn, receiver, settings, procs):
    receiver.on("/slow", (200, 3.0))  # the first request hangs; the redelivery is answered at once
    enqueue_one_batch(conn, settings, once_triggers(1, receiver.url + "/slow"))

    worker_a = start_worker(procs, conn)
    first = receiver.wait_for(lambda rs: len(rs) >= 1, 20)
    assert len(first) == 1, procs.logs()
    key = header(first[0], "Idempotency-Key")
    worker_a.popen.kill()  # SIGKILL while the receiver is still holding the request
    killed_at = time.time()
    worker_a.wait(10)
    assert receiver.to("/slow")[0].at < killed_at
    assert records(conn) == {}, "the killed worker cannot have recorded an outcome"

    sched = start_scheduler(procs, conn)  # reaps the expired lease and pushes the batch again
    worker_b = start_worker(procs, conn)
    both = receiver.wait_for(lambda rs: len(rs) >= 2, LEASE + 20)
    assert len(both) == 2, procs.logs()
    again = both[1]
    assert header(again, "Idempotency-Key") == key
    assert header(again, "X-Scheduler-Attempt") == "1"
    # Handed over by the lease reaper: not before the dead worker's last lease ran out.
    assert again.at >= killed_at + LEASE / 2, (first[0].at, killed_at, again.at)
    assert "lost their worker" in sched.log()
    rec = wait_until(lambda: records(conn).get(key), 10, "the delivered record", procs)
    assert rec["outcome"] == "delivered"
    assert [a["status"] for a in rec["attempts"]] == [200]
    wait_until(lambda: drained(conn), 5, "the batch to be gone", procs)
    time.sleep(0.5)
    assert len(snapshot(receiver)) == 2, "delivered a third time"
    assert stop(worker_b, procs) == 0 and stop(sched, procs) == 0, procs.logs()


def test_sigterm_on_worker_finishes_in_flight_requests_and_hands_back_the_rest(conn, receiver, settings, procs):
    receiver.on("/w", (200, 1.5), (200, 1.5))  # the two first requests take 1.5 s; later ones none
    enqueue_one_batch(conn, settings, once_triggers(5, receiver.url + "/w"))

    worker_a = start_worker(procs, conn, WORKER_CONCURRENCY=2)
    in_flight = receiver.wait_for(lambda rs: len(rs) >= 2, 20)
    assert len(in_flight) == 2, procs.logs()
    worker_a.send(signal.SIGTERM)
    termed = time.monotonic()
    try:
        code = worker_a.wait(DELIVERY_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker did not exit after SIGTERM\n{procs.logs()}") from None
    took = time.monotonic() - termed
    assert code == 0, procs.logs()
    assert took < DELIVERY_TIMEOUT + 3
    assert len(snapshot(receiver)) == 2, f"a request was started after SIGTERM\n{procs.logs()}"

    first_keys = {header(r, "Idempotency-Key") for r in in_flight}
    recs = records(conn)
    assert set(recs) == first_keys, procs.logs()
    for rec in recs.values():
        assert rec["outcome"] == "delivered"
        [attempt] = rec["attempts"]
        assert attempt["status"] == 200 and attempt["duration_ms"] >= 1400, attempt
    left = [k for k in conn.scan_iter(keys.BATCH_PREFIX + "*")]
    assert len(left) == 1 and conn.hlen(left[0]) == 3, "the three firings not started stay in their batch"
    assert conn.zcard(keys.OUTBOX) == 1, "the batch went back to the outbox"
    assert conn.zcard(keys.LEASES) == 0

    start_scheduler(procs, conn)
    start_worker(procs, conn, WORKER_CONCURRENCY=2)
    wait_until(lambda: len(records(conn)) == 5, 20, "all five firings to be delivered", procs)
    wait_until(lambda: drained(conn), 5, "the batch to be gone", procs)
    time.sleep(0.3)
    ids = [header(r, "Idempotency-Key") for r in snapshot(receiver)]
    assert len(ids) == 5 and len(set(ids)) == 5, ids
    assert set(records(conn)) == set(ids)
    assert {r["outcome"] for r in records(conn).values()} == {"delivered"}
    assert conn.zcard(keys.done("ws")) == 5


def test_plain_rq_worker_command_delivers_our_batches(conn, receiver, settings, redis_url, procs):
    triggers = once_triggers(1, receiver.url + "/rq", headers={"X-Custom": "secret-value"})
    due = enqueue_one_batch(conn, settings, triggers, workspace="acme")
    rq_worker = procs.start(
        "rq-worker",
        argv=[sys.executable, "-m", "rq.cli", "worker", "--url", redis_url, "--burst", settings.queue_name],
    )
    try:
        code = rq_worker.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"rq worker --burst did not finish\n{procs.logs()}") from None
    assert code == 0, procs.logs()

    [req] = receiver.to("/rq")
    iso = datetime.fromtimestamp(due, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert req.method == "POST"
    assert req.json() == {"i": 0}
    assert header(req, "Content-Type") == "application/json"
    assert header(req, "User-Agent") == f"scheduler-api/{__version__}"
    assert header(req, "X-Custom") == "secret-value"
    assert header(req, "X-Scheduler-Workspace") == "acme"
    assert header(req, "X-Scheduler-Trigger") == "acme:0"
    assert header(req, "X-Scheduler-Scheduled-At") == iso
    assert header(req, "X-Scheduler-Attempt") == "1"
    assert header(req, "Idempotency-Key") == f"acme:0@{iso}"
    rec = records(conn, "acme")[f"acme:0@{iso}"]
    assert rec["outcome"] == "delivered" and rec["workspace_id"] == "acme"
    assert [a["status"] for a in rec["attempts"]] == [200]
    assert drained(conn)
    assert conn.zcard(keys.LEASES) == 0


def test_scheduler_exits_cleanly_on_sigterm(conn, procs):
    # A long interval: the stop must not wait for the next poll.
    sched = start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS="30")
    time.sleep(0.3)
    t0 = time.monotonic()
    assert stop(sched, procs, 5) == 0, procs.logs()
    assert time.monotonic() - t0 < 2.0, procs.logs()
    assert "scheduler stopped" in sched.log()
    assert live_schedulers(conn) == 0, "the scheduler registers its death"


def test_restarted_scheduler_fires_only_the_most_recent_missed_time(conn, receiver, procs):
    start_worker(procs, conn)
    first = start_scheduler(procs, conn)
    n = 5
    store.replace(conn, "ws", [Trigger(cron=EVERY_SECOND, url=f"{receiver.url}/m/{i}", method="GET") for i in range(n)])
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
