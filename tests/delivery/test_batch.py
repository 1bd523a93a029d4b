"""`scheduler_api.delivery.batch`: one RQ job delivers a batch; firings of triggers removed meanwhile
(queued, waiting for a lane, or retrying) are dropped; plain rq workers run our batches too.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from redis import Redis
from rq import Queue, SimpleWorker

from scheduler_api.delivery import dispatch as delivery
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, keys
from tests.support.clock import T, iso_second, once_cron
from tests.support.engine import attempts, deliver, record_of
from tests.support.factories import WS, make_engine_settings, make_trigger
from tests.support.receiver import Receiver, headers_of


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_pending_retry_of_a_removed_trigger_is_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, change: str
) -> None:
    receiver.on("/r", *[(500, 0)] * 5)
    edits.replace(conn, WS, [make_trigger(receiver.url + "/r", cron_expr=once_cron(T + 1))], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    deliver(conn, settings)
    assert conn.zcard(keys.RETRIES) == 1
    if change == "delete":
        edits.delete(conn, WS)
    else:  # same jobId ws:0, new definition
        edits.replace(
            conn, WS, [make_trigger(receiver.url + "/other", cron_expr=once_cron(T + 100))], now=lambda: T + 2
        )
    for i in range(4):
        ticking.tick(conn, queue, settings, now=T + 3 + i * 0.2)
        deliver(conn, settings)
    assert attempts(receiver.to("/r")) == [1]
    assert receiver.to("/other") == []
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0
    assert record_of(conn, "ws:0", T + 1) is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []


def test_trigger_deleted_while_its_batch_is_being_delivered_is_not_sent(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    """A firing waiting in its batch for a free lane (WORKER_MAX_IN_FLIGHT) has not started: deleting
    its trigger meanwhile must drop it, as it would a firing still in the queue. The first request
    takes 0.15 s, less than the batch's periodic re-read (0.25 s): the worker hears of the delete."""
    settings = make_engine_settings(redis_url, worker_concurrency=1, worker_max_in_flight=1)
    receiver.on("/a", (200, 0.15))
    receiver.on("/b", (200, 0.15))
    edits.replace(conn, "a", [make_trigger(receiver.url + "/a")], now=lambda: T)
    edits.replace(conn, "b", [make_trigger(receiver.url + "/b")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.2).fired == 2
    assert queue.count == 1  # one batch: the second firing waits for the first

    deleted: list[str] = []

    def delete_the_other() -> None:
        reqs = receiver.wait_for(lambda rs: len(rs) >= 1, 5)
        if reqs:
            other = "b" if reqs[0].path == "/a" else "a"
            edits.delete(conn, other)
            deleted.append(other)

    th = threading.Thread(target=delete_the_other)
    th.start()
    deliver(conn, settings)
    th.join(5)
    assert len(deleted) == 1
    assert [r.path for r in receiver.requests] == ["/a" if deleted[0] == "b" else "/b"]
    assert firings.get_record(conn, f"{deleted[0]}:0@{iso_second(T + 1)}") is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []


def test_plain_rq_simple_worker_delivers_a_batch(
    conn: Redis,
    redis_url: str,
    settings: Settings,
    queue: Queue,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAME", settings.queue_name)
    monkeypatch.setenv("DELIVERY_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("DELIVERY_MAX_RETRIES", "2")
    monkeypatch.setenv("DELIVERY_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "true")
    assert delivery._dispatch is None
    receiver.on("/plain/3", (500, 0))
    triggers = [make_trigger(f"{receiver.url}/plain/{i}", payload={"i": i}) for i in range(5)]
    edits.replace(conn, WS, triggers, now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.4).fired == 5
    assert queue.count == 1

    SimpleWorker([queue], connection=conn).work(burst=True)

    reqs = receiver.requests
    assert sorted(r.path for r in reqs) == [f"/plain/{i}" for i in range(5)]
    for r in reqs:
        i = int(r.path.rsplit("/", 1)[1])
        assert r.json() == {"i": i}
        assert headers_of(r)["idempotency-key"] == f"ws:{i}@{iso_second(T + 1)}"
        assert headers_of(r)["x-scheduler-attempt"] == "1"
    for i in (0, 1, 2, 4):
        rec = record_of(conn, f"ws:{i}", T + 1)
        assert rec is not None and rec["outcome"] == "delivered"
    rec = record_of(conn, "ws:3", T + 1)
    assert rec is not None and rec["outcome"] == "retrying"
    assert conn.zcard(keys.RETRIES) == 1  # the failure is retried by the settings read from the environment

    assert ticking.tick(conn, queue, settings, now=T + 1.6).retried == 1
    SimpleWorker([queue], connection=conn).work(burst=True)
    rec = record_of(conn, "ws:3", T + 1)
    assert rec is not None and rec["outcome"] == "delivered"
    assert [a["status"] for a in rec["attempts"]] == [500, 200]
    assert queue.count == 0


def test_run_batch_outside_an_rq_job_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        delivery.run_batch(uuid.uuid4().hex)
