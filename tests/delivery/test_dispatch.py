"""`scheduler_api.delivery.dispatch`: a worker holds at most WAITING_PER_LANE x WORKER_CONCURRENCY
waiting firings of one workspace; the rest of a batch's firings of that workspace stay in the
batch, which goes back to the outbox when its other firings end (pushed again as much later as the
oldest of them is late, at least DEFER_MIN_SECONDS), and are delivered then, each once. Firings of
other workspaces in the same batch are not held up."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.delivery import dispatch
from scheduler_api.engine import tick as ticking
from scheduler_api.storage import edits, keys
from tests.support.clock import T, once_cron
from tests.support.engine import deliver, record_of
from tests.support.factories import make_engine_settings, make_trigger
from tests.support.receiver import Receiver, headers_of


def test_a_workspace_beyond_its_waiting_bound_waits_in_the_outbox_and_nothing_is_lost(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "WAITING_PER_LANE", 2)  # one lane: at most 2 waiting
    settings = make_engine_settings(redis_url, worker_concurrency=1, scheduler_batch_size=100)
    cron = once_cron(T + 1)
    edits.replace(conn, "busy", [make_trigger(f"{receiver.url}/busy/{i}", cron) for i in range(6)], now=lambda: T)
    edits.replace(conn, "calm", [make_trigger(f"{receiver.url}/calm/{i}", cron) for i in range(2)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.5).fired == 8
    assert queue.count == 1  # one batch for both workspaces

    before = time.time()
    deliver(conn, settings)
    sent = [r.path for r in receiver.requests]
    assert sorted(p for p in sent if p.startswith("/calm/")) == ["/calm/0", "/calm/1"]
    assert len([p for p in sent if p.startswith("/busy/")]) == 2  # the two the worker took
    [batch] = conn.keys(keys.BATCH_PREFIX + "*")
    assert conn.hlen(batch) == 4  # the other four stay in their batch
    [(batch_id, push_at)] = conn.zrange(keys.OUTBOX, 0, -1, withscores=True)
    assert keys.batch(batch_id.decode()) == batch.decode()
    # Due at T + 1 by the injected clock, in the real clock's future: not late, so the least wait.
    assert before + dispatch.DEFER_MIN_SECONDS - 0.1 <= push_at <= time.time() + dispatch.DEFER_MIN_SECONDS
    assert conn.zcard(keys.LEASES) == 0

    for _ in range(2):  # two firings a time: twice more
        ticking.tick(conn, queue, settings, now=push_at + 0.1)  # the scheduler pushes it again then
        deliver(conn, settings)
        push_at = (conn.zrange(keys.OUTBOX, 0, -1, withscores=True) or [(b"", 0.0)])[0][1]
    keys_sent = [headers_of(r)["idempotency-key"] for r in receiver.requests]
    assert len(keys_sent) == 8 and len(set(keys_sent)) == 8  # every firing once
    assert all(record_of(conn, f"busy:{i}", T + 1)["outcome"] == "delivered" for i in range(6))  # type: ignore[index]
    assert conn.keys(keys.BATCH_PREFIX + "*") == [] and conn.zcard(keys.OUTBOX) == 0
