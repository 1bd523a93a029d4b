"""`scheduler_api.delivery.http` and the worker's shared client: connections are kept across firings
and batches, cookies never travel from one request to another.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue

from scheduler_api.delivery import dispatch as delivery
from scheduler_api.delivery import worker
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits
from tests.support.clock import T
from tests.support.engine import deliver
from tests.support.factories import WS, make_engine_settings, make_trigger
from tests.support.receiver import Receiver


def test_connections_are_reused_across_firings_and_batches(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    # Two batches (two RQ jobs) of 20 firings, 2 in flight: one worker delivers them all over at
    # most two connections, kept by its shared client from one job to the next.
    settings = make_engine_settings(redis_url, worker_concurrency=2, scheduler_batch_size=20)
    edits.replace(conn, WS, [make_trigger(f"{receiver.url}/c/{i}") for i in range(40)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 2
    deliver(conn, settings)
    assert len(receiver.requests) == 40
    assert 1 <= len({r.peer for r in receiver.requests}) <= 2


def test_cookies_set_by_one_target_never_travel_with_another_request(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """One HTTP client serves every workspace: a cookie workspace A's target sets must not be sent
    with workspace B's request to the same host (nor with A's own next request)."""
    receiver.on("/a", (200, 0, {"Set-Cookie": "session=secret-of-workspace-A; Path=/"}))
    edits.replace(conn, "a", [make_trigger(receiver.url + "/a")], now=lambda: T)
    edits.replace(conn, "b", [make_trigger(receiver.url + "/b")], now=lambda: T)
    runtime = DeliveryRuntime(settings)  # one runtime, one client, for both rounds
    delivery.install_runtime(runtime)
    try:
        for now in (T + 1.5, T + 2.5):  # round 1: /a answers with Set-Cookie; round 2: both again
            ticking.tick(conn, queue, settings, now=now)
            w = worker.DeliveryWorker([queue], connection=conn)
            w.runtime = runtime
            w.work(burst=True)
    finally:
        delivery.install_runtime(None)
        runtime.close()
    assert len(receiver.to("/a")) == 2 and len(receiver.to("/b")) == 2
    for r in receiver.requests:
        assert "cookie" not in {k.lower() for k in r.headers}, r.headers
