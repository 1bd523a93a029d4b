"""Overlap rules, schedule bounds, one-off triggers and jitter through real schedulers and workers.

A slow receiver holds each request long enough for the next run times of an every-second cron
(``* * * * * *``) to come due while a firing is active: with ``skip`` they are recorded as skipped
(naming the active firing) and the receiver never sees two requests of one trigger at once; with
``buffer_one`` one waits and is sent as soon as the active one ends. A worker SIGKILLed mid-request
blocks its trigger no longer than its lease (``WORKER_LEASE_SECONDS``, 2 s here).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis

from scheduler_api.policy import jitter_offset
from scheduler_api.storage import edits, keys
from scheduler_api.triggers import Trigger
from tests.support.api import jobs
from tests.support.clock import EVERY_SECOND, iso_second, once_cron
from tests.support.factories import WS
from tests.support.processes import (
    LEASE,
    Procs,
    drained,
    header,
    records,
    scheduled_second,
    start_scheduler,
    start_worker,
    stop,
    wait_until,
)
from tests.support.receiver import Received, Receiver


def slow_trigger(receiver: Receiver, overlap: str, path: str = "/slow") -> Trigger:
    return Trigger(cron=EVERY_SECOND, url=receiver.url + path, method="GET", overlap=overlap)


def in_flight(requests: list[Received], delays: list[float]) -> list[tuple[float, float]]:
    """(arrival, answer) of each request, the i-th held `delays[i]` seconds by the receiver."""
    return [(r.at, r.at + (delays[i] if i < len(delays) else 0.0)) for i, r in enumerate(requests)]


def by_outcome(conn: Redis, outcome: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in records(conn).items() if v["outcome"] == outcome}


def test_skip_with_two_schedulers_never_overlaps_a_slow_target(conn: Redis, receiver: Receiver, procs: Procs) -> None:
    delays = [1.6] * 20
    receiver.on("/slow", *[(200, d) for d in delays])
    for interval in ("0.2", "0.3"):
        start_scheduler(procs, conn, SCHEDULER_INTERVAL_SECONDS=interval)
    for _ in range(2):  # a second worker could take an overlapping firing, were it not held back
        start_worker(procs, conn)
    edits.replace(conn, WS, [slow_trigger(receiver, "skip")])
    wait_until(lambda: len(receiver.to("/slow")) >= 3, 15, "three deliveries", procs)
    wait_until(lambda: len(by_outcome(conn, "delivered")) >= 3, 5, "their records", procs)

    sent = receiver.to("/slow")
    spans = in_flight(sent, delays)
    for (_, answered), (arrived, _) in zip(spans, spans[1:], strict=False):
        assert arrived >= answered - 0.05, f"two requests of one trigger at once: {spans}\n{procs.logs()}"
    skipped = by_outcome(conn, "skipped")
    assert len(skipped) >= 2, procs.logs()
    sent_ids = {header(r, "Idempotency-Key") for r in sent}
    for fid, rec in skipped.items():
        assert rec["reason"] == "overlap" and rec["active_id"] in sent_ids and rec["active_id"] < fid
        assert fid not in sent_ids
    assert len(sent_ids) == len(sent), "a firing was sent twice"


def test_buffer_one_sends_the_waiting_firing_when_the_active_one_ends(
    conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    receiver.on("/slow", (200, 2.5))  # the first request is slow, the others answer at once
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    edits.replace(conn, WS, [slow_trigger(receiver, "buffer_one")])
    sent = receiver.wait_for(lambda rs: len(rs) >= 2, 15)
    assert len(sent) >= 2, procs.logs()
    first, second = sent[0], sent[1]
    # The one due a second after the first waited, and left as soon as the first was answered.
    assert scheduled_second(second) == scheduled_second(first) + 1, procs.logs()
    assert first.at + 2.5 <= second.at < first.at + 2.5 + 0.8, (first.at, second.at)
    wait_until(lambda: by_outcome(conn, "skipped"), 5, "a skipped record", procs)
    first_id = header(first, "Idempotency-Key")
    skipped = by_outcome(conn, "skipped")
    assert {rec["active_id"] for rec in skipped.values()} == {first_id}, skipped
    assert f"ws:0@{iso_second(scheduled_second(first) + 2)}" in skipped


def test_a_killed_workers_firing_blocks_its_trigger_no_longer_than_its_lease(
    conn: Redis, receiver: Receiver, procs: Procs
) -> None:
    receiver.on("/slow", (200, 8.0))  # held while the worker is killed
    start_scheduler(procs, conn)
    worker_a = start_worker(procs, conn)
    edits.replace(conn, WS, [slow_trigger(receiver, "skip")])
    [first] = receiver.wait_for(lambda rs: len(rs) >= 1, 15)[:1]
    worker_a.popen.kill()
    killed_at = time.time()
    worker_a.wait(10)
    start_worker(procs, conn)

    # The lease runs out, the firing is sent again (same id) and lets go: the trigger fires again.
    later = wait_until(
        lambda: [r for r in receiver.to("/slow") if scheduled_second(r) > scheduled_second(first)],
        LEASE + 8,
        "a later firing of the trigger",
        procs,
    )
    assert later[0].at < killed_at + LEASE + 4, (killed_at, later[0].at)
    resent = [r for r in receiver.to("/slow") if header(r, "Idempotency-Key") == header(first, "Idempotency-Key")]
    assert len(resent) == 2, procs.logs()
    skipped = by_outcome(conn, "skipped")
    assert skipped and {r["active_id"] for r in skipped.values()} == {header(first, "Idempotency-Key")}


def test_start_end_max_firings_and_jitter_through_the_processes(
    conn: Redis, receiver: Receiver, procs: Procs, client: TestClient
) -> None:
    start_scheduler(procs, conn)
    start_worker(procs, conn)
    base = math.ceil(time.time()) + 2
    # A trigger id whose jitter offset at `base` is 1-3 s of a 4 s window.
    jid = next(f"j{i}" for i in range(100) if 1 <= jitter_offset(f"ws:j{i}@{iso_second(base)}", 4) <= 3)
    offset = jitter_offset(f"ws:{jid}@{iso_second(base)}", 4)
    url = receiver.url
    edits.replace(
        conn,
        WS,
        [
            Trigger(
                id="window",
                cron=EVERY_SECOND,
                url=url + "/window",
                method="GET",
                start_at=iso_second(base),
                end_at=iso_second(base + 2),
            ),  # fmt: skip
            Trigger(id="count", cron=EVERY_SECOND, url=url + "/count", method="GET", max_firings=2),
            Trigger(id=jid, cron=once_cron(base), url=url + "/jitter", method="GET", jitter_seconds=4),
        ],
    )
    wait_until(lambda: receiver.to("/jitter"), base + offset + 3 - time.time(), "the jittered firing", procs)
    time.sleep(max(base + 3.5 - time.time(), 0))
    wait_until(lambda: drained(conn), 5, "every batch to be delivered", procs)

    assert [scheduled_second(r) for r in receiver.to("/window")] == [base, base + 1, base + 2]
    assert len(receiver.to("/count")) == 2
    [jittered] = receiver.to("/jitter")
    assert base + offset <= jittered.at < base + offset + 0.8, (base, offset, jittered.at)
    assert header(jittered, "X-Scheduler-Scheduled-At") == iso_second(base)
    assert header(jittered, "Idempotency-Key") == f"ws:{jid}@{iso_second(base)}"
    for trigger_id in ("window", "count"):
        assert conn.zscore(keys.SCHEDULE, f"ws:{trigger_id}") is None  # ended
    listed = {j["id"]: j for j in jobs(client, WS)}
    for trigger_id in ("window", "count"):
        assert listed[trigger_id]["next_run_at"] is None
        assert listed[trigger_id].get("state", "ended") == "ended"


def test_a_one_off_fires_once_across_a_scheduler_restart(conn: Redis, receiver: Receiver, procs: Procs) -> None:
    start_worker(procs, conn)
    first = start_scheduler(procs, conn)
    at = math.ceil(time.time()) + 2
    edits.replace(conn, WS, [Trigger(at=datetime.fromtimestamp(at, UTC), url=receiver.url + "/once", method="GET")])
    time.sleep(max(at - 0.7 - time.time(), 0))
    assert stop(first, procs, 5) == 0, procs.logs()
    time.sleep(max(at + 1.0 - time.time(), 0))  # `at` passes while no scheduler runs
    assert receiver.to("/once") == []
    start_scheduler(procs, conn, MISFIRE_GRACE_SECONDS="30")
    [sent] = receiver.wait_for(lambda rs: len(rs) >= 1, 10)
    assert scheduled_second(sent) == at
    wait_until(lambda: drained(conn), 5, "the batch to be delivered", procs)
    time.sleep(1.0)
    assert len(receiver.to("/once")) == 1
    assert conn.zscore(keys.SCHEDULE, "ws:0") is None
    assert records(conn)[f"ws:0@{iso_second(at)}"]["outcome"] == "delivered"
