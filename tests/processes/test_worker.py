"""`scheduler-api worker` and the plain `rq worker` as real processes: a SIGKILLed worker's firing is
delivered again by another, SIGTERM finishes the requests in flight and hands back the rest.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from redis import Redis
from rq import Queue

from scheduler_api import __version__
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.clock import once_cron
from tests.support.processes import (
    DELIVERY_TIMEOUT,
    LEASE,
    drained,
    header,
    records,
    snapshot,
    start_scheduler,
    start_worker,
    stop,
    wait_until,
)


def enqueue_one_batch(conn: Redis, settings: Settings, triggers: list[Trigger], workspace: str = "ws") -> float:
    """Write `triggers` (crons for one second ~2 s ahead) and tick once in-process at that second:
    exactly one batch with one firing per trigger is pushed to RQ. Return the scheduled time."""
    _, stored = edits.replace(conn, workspace, triggers)
    due = stored[0].next_run_at
    assert due is not None and all(s.next_run_at == due for s in stored)
    result = ticking.tick(conn, Queue(settings.queue_name, connection=conn), settings, now=due)
    assert (result.fired, result.pushed) == (len(triggers), 1), result
    return due


def once_triggers(n: int, url: str, **extra: Any) -> list[Trigger]:
    cron = once_cron(int(time.time()) + 2)
    return [Trigger(cron=cron, url=url, method="POST", payload={"i": i}, **extra) for i in range(n)]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_sends_nothing_more_when_it_resumes(conn, receiver, settings, procs):
    """Worker A is stopped (SIGSTOP) mid-batch for longer than its lease; the scheduler hands the
    batch to worker B, which delivers the rest. When A resumes, its lease is gone (storage.leases):
    it finishes the request it had in flight and starts none of the batch's other firings, so only
    that one firing may arrive twice (the Idempotency-Key tells the receiver)."""
    receiver.on("/w", (200, 1.0))  # the first request takes a second; the others none
    enqueue_one_batch(conn, settings, once_triggers(5, receiver.url + "/w"))
    worker_a = start_worker(procs, conn, WORKER_CONCURRENCY=1)
    [first] = receiver.wait_for(lambda rs: len(rs) >= 1, 20)
    worker_a.send(signal.SIGSTOP)
    start_scheduler(procs, conn)
    time.sleep(LEASE + 1.0)  # A's lease runs out; the scheduler puts the batch back in the outbox
    start_worker(procs, conn, WORKER_CONCURRENCY=1)
    wait_until(lambda: len({header(r, "Idempotency-Key") for r in snapshot(receiver)}) == 5, 20, "all five", procs)
    worker_a.send(signal.SIGCONT)
    time.sleep(LEASE + 1.0)  # A's timer renews, learns the batch is not its own, sends nothing more
    wait_until(lambda: drained(conn), 10, "the batch to be gone", procs)
    keys_sent = [header(r, "Idempotency-Key") for r in snapshot(receiver)]
    again = {k for k in keys_sent if keys_sent.count(k) > 1}
    assert again <= {header(first, "Idempotency-Key")}, (keys_sent, procs.logs())
    assert len(records(conn)) == 5 and {r["outcome"] for r in records(conn).values()} == {"delivered"}
