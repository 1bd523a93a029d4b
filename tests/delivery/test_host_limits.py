"""Per-(workspace, host) rate limits in one worker (scheduler_api.delivery.limits): a firing over
the limit waits and is delivered, its record shows the wait; a Retry-After holds back the
workspace's requests to that host only; hosts and workspaces without a limit go unchecked.

Arrival times are the receiver's clock: a window of one second is counted with a tolerance of
`TOLERANCE` (the time between Redis granting a turn and the request's arrival varies by a few
milliseconds from one request to the next).
"""

from __future__ import annotations

import math
import time
from typing import Any

from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, firings, host_limits, keys, workspace_settings
from scheduler_api.storage.workspace_settings import RateLimit, WorkspaceSettings
from tests.support.arrivals import most_in_flight, most_in_one_second
from tests.support.clock import iso_second, once_cron
from tests.support.engine import deliver
from tests.support.factories import make_engine_settings, make_trigger
from tests.support.receiver import Receiver

TOLERANCE = 0.05
HOST = "127.0.0.1"  # the receiver's host, as httpx parses its url


def limit(conn: Redis, ws: str, **bounds: Any) -> None:
    workspace_settings.write(conn, ws, WorkspaceSettings(rate_limits=(RateLimit(HOST, **bounds),)))


def fire_together(
    conn: Redis, queue: Queue, settings: Settings, paths: dict[str, list[str]], receiver: Receiver, prefix: str = "p"
) -> float:
    """Register, per workspace, one trigger per path (ids p0, p1... with `prefix` p) due one recent
    second, and commit them all in one tick (one batch); return that second."""
    due = math.floor(time.time()) - 1
    for ws, ps in paths.items():
        triggers = [
            make_trigger(receiver.url + p, cron_expr=once_cron(due), id=f"{prefix}{i}") for i, p in enumerate(ps)
        ]
        edits.replace(conn, ws, triggers, now=lambda: due - 0.5)
    assert ticking.tick(conn, queue, settings, now=time.time()).fired == sum(map(len, paths.values()))
    return due


def record(conn: Redis, ws: str, trigger_id: str, due: float) -> dict[str, Any]:
    found = firings.get_record(conn, f"{ws}:{trigger_id}@{iso_second(due)}")
    assert found is not None
    return found


def test_concurrency_bounds_requests_in_flight_and_all_are_delivered(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, worker_concurrency=5)
    receiver.on("/slow", *[(200, 0.3)] * 6)
    limit(conn, "ws", concurrency=2)
    due = fire_together(conn, queue, settings, {"ws": ["/slow"] * 6}, receiver)
    deliver(conn, settings)

    sent = receiver.to("/slow")
    assert len(sent) == 6
    assert most_in_flight(sent, 0.3 - TOLERANCE) <= 2
    recs = [record(conn, "ws", f"p{i}", due) for i in range(6)]
    assert all(r["outcome"] == "delivered" for r in recs)
    waits = sorted(r["attempts"][0].get("waited_ms", 0) for r in recs)
    assert waits[:2] == [0, 0] and waits[-1] >= 500  # two went at once; the last two after two rounds


def test_per_second_spaces_requests_over_any_sliding_second(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, worker_concurrency=5)
    limit(conn, "ws", per_second=5)
    due = fire_together(conn, queue, settings, {"ws": ["/a"] * 8}, receiver)
    deliver(conn, settings)

    sent = receiver.to("/a")
    assert len(sent) == 8
    assert most_in_one_second(sent, TOLERANCE) <= 5
    times = sorted(r.at for r in sent)
    assert times[-1] - times[0] >= 7 * 0.2 - TOLERANCE
    recs = [record(conn, "ws", f"p{i}", due) for i in range(8)]
    assert all(r["outcome"] == "delivered" for r in recs)
    assert sum("waited_ms" in r["attempts"][0] for r in recs) == 7  # all but the first waited


def test_retry_after_holds_back_the_host_for_that_workspace_only(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url)
    for ws in ("a", "b"):
        limit(conn, ws, concurrency=10)
    receiver.on("/busy", (503, 0, {"Retry-After": "1"}))
    fire_together(conn, queue, settings, {"a": ["/busy"]}, receiver)
    deliver(conn, settings)
    answered = receiver.to("/busy")[0].at

    due = fire_together(conn, queue, settings, {"a": ["/a-later"], "b": ["/b-now"]}, receiver, "q")
    deliver(conn, settings)
    (b_now,) = receiver.to("/b-now")
    (a_later,) = receiver.to("/a-later")
    assert b_now.at - answered < 0.5  # another workspace to the same host: not held back
    assert a_later.at - answered >= 1 - TOLERANCE
    waited = record(conn, "a", "q0", due)["attempts"][0]["waited_ms"]
    assert waited >= 500
    assert "waited_ms" not in record(conn, "b", "q0", due)["attempts"][0]


def test_a_workspace_without_limits_and_an_unlimited_host_are_not_checked(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url)
    workspace_settings.write(conn, "a", WorkspaceSettings(rate_limits=(RateLimit("api.example.com", per_second=1),)))
    fire_together(conn, queue, settings, {"a": ["/x"] * 3, "b": ["/y"] * 3}, receiver)
    deliver(conn, settings)
    assert len(receiver.requests) == 6
    assert conn.keys("sa:host:*") == [] and conn.keys("sa:flight:*") == []


def test_a_reserved_start_keeps_its_slot_and_a_hold_lets_it_go(conn: Redis) -> None:
    """The script's answers to waiting callers (scheduler_api.storage.host_limits.acquire)."""
    bounds = RateLimit(HOST, per_second=1, concurrency=1)
    flight = keys.host_limit("ws", HOST)[1]
    assert host_limits.acquire(conn, "ws", bounds, "a", lease_seconds=5) == (0.0, False)
    assert host_limits.acquire(conn, "ws", bounds, "b", lease_seconds=5) == (host_limits.FULL_POLL_SECONDS, False)
    host_limits.release(conn, "ws", HOST, "a")
    wait, reserved = host_limits.acquire(conn, "ws", bounds, "b", lease_seconds=5)
    assert reserved and 0.9 < wait <= host_limits.SPACING  # b's start is reserved, with its slot
    assert conn.zrange(flight, 0, -1) == [b"b"]
    assert host_limits.acquire(conn, "other", bounds, "c", lease_seconds=5) == (0.0, False)  # another workspace

    host_limits.hold(conn, "ws", HOST, 30)
    wait, reserved = host_limits.acquire(conn, "ws", bounds, "b", lease_seconds=5, reserved=True)
    assert not reserved and 29 < wait <= 30 and conn.zcard(flight) == 0  # held: b starts over afterwards
    host_limits.hold(conn, "ws", HOST, 1)  # a shorter hold does not shorten it
    assert 29 < host_limits.acquire(conn, "ws", bounds, "b", lease_seconds=5)[0] <= 30
