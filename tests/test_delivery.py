"""End-to-end tests of delivery: what the receiver gets, retries, backoff, outcomes, retention.

The engine runs in-process: `scheduler_api.engine.tick.tick` with an injected `now` moves due firings into RQ
jobs, and `worker.run_worker(burst=True)` delivers them to a real local HTTP receiver. Retries
are due at real times (time.time() + backoff), so retry tests drive ticks with the real clock
on triggers whose cron matches one second only (`_once_cron`), so the real-clock ticks never
fire a second time.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Received, Receiver
from conftest import headers_of as _h
from conftest import iso_second as _iso
from conftest import make_engine_settings as _settings
from redis import Redis
from rq import Queue, SimpleWorker

from scheduler_api import __version__, cron
from scheduler_api.delivery import batch as delivery
from scheduler_api.delivery import retry, worker
from scheduler_api.delivery.runtime import DeliveryRuntime
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.storage.history import Record
from scheduler_api.triggers import Trigger

T = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole hour
WS = "ws"


@pytest.fixture
def settings(redis_url: str, conn: Redis) -> Settings:
    return _settings(redis_url)


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")


def _once_cron(ts: float) -> str:
    """A six-field cron matching the second `ts` only (once a year)."""
    d = datetime.fromtimestamp(ts, UTC)
    return f"{d.second} {d.minute} {d.hour} {d.day} {d.month} *"


def _trigger(url: str, *, cron_expr: str = "* * * * * *", method: str = "POST", **kw: Any) -> Trigger:
    return Trigger(cron=cron_expr, url=url, method=method, **kw)


def _deliver(conn: Redis, settings: Settings) -> None:
    worker.run_worker(settings, conn, burst=True)


def _fire_now(conn: Redis, queue: Queue, settings: Settings, triggers: list[Trigger], ws: str = WS) -> float:
    """Register `triggers` (their crons are ignored: each gets a cron matching one recent second)
    and tick with the real clock so each fires once; return that scheduled second."""
    due = math.floor(time.time()) - 1
    once = [t.model_copy(update={"cron": _once_cron(due)}) for t in triggers]
    store.replace(conn, ws, once, now=lambda: due - 0.5)
    result = ticking.tick(conn, queue, settings, now=time.time())
    assert result.fired == len(triggers)
    return due


def _drive(conn: Redis, queue: Queue, settings: Settings, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """Tick with the real clock and run the burst worker until `until()` holds."""
    deadline = time.monotonic() + timeout
    while True:
        ticking.tick(conn, queue, settings, now=time.time())
        _deliver(conn, settings)
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _keep_driving(conn: Redis, queue: Queue, settings: Settings, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ticking.tick(conn, queue, settings, now=time.time())
        _deliver(conn, settings)
        time.sleep(0.02)


def _attempts(reqs: list[Received]) -> list[int]:
    return [int(_h(r)["x-scheduler-attempt"]) for r in reqs]


def _record(conn: Redis, job_id: str, scheduled: float) -> dict[str, Any] | None:
    return firings.get_record(conn, f"{job_id}@{_iso(scheduled)}")


def _final(conn: Redis, job_id: str, scheduled: float) -> bool:
    """The firing has a final record (a record says "retrying" while retries are pending)."""
    rec = _record(conn, job_id, scheduled)
    return rec is not None and rec["outcome"] != "retrying"


# --- 1. what is sent -----------------------------------------------------------------------------


def test_post_sends_payload_custom_headers_and_scheduler_headers(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    payload = {"hello": "world", "n": 3, "nested": {"list": [1, 2, None]}, "unicode": "é✓"}
    store.replace(
        conn,
        WS,
        [
            _trigger(
                receiver.url + "/hook", payload=payload, headers={"X-Custom": "secret-value", "Authorization": "B x"}
            )
        ],
        now=lambda: T,
    )
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    _deliver(conn, settings)

    reqs = receiver.to("/hook")
    assert len(reqs) == 1
    r = reqs[0]
    assert r.method == "POST"
    assert r.json() == payload
    assert _h(r)["content-type"] == "application/json"
    assert _h(r)["x-custom"] == "secret-value"
    assert _h(r)["authorization"] == "B x"
    assert _h(r)["user-agent"] == f"scheduler-api/{__version__}"
    assert _h(r)["x-scheduler-workspace"] == WS
    assert _h(r)["x-scheduler-trigger"] == "ws:0"
    assert _h(r)["x-scheduler-scheduled-at"] == "2027-01-15T08:00:01Z"
    assert datetime.fromisoformat(_h(r)["x-scheduler-scheduled-at"]).timestamp() == T + 1
    assert _h(r)["x-scheduler-attempt"] == "1"
    assert _h(r)["idempotency-key"] == "ws:0@2027-01-15T08:00:01Z"

    rec = _record(conn, "ws:0", T + 1)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    assert rec["workspace_id"] == WS
    assert rec["scheduled_at"] == "2027-01-15T08:00:01Z"
    assert [a["status"] for a in rec["attempts"]] == [200]
    assert rec["attempts"][0]["body"] == '{"ok":true}'
    # The header values are secrets: the record does not carry them.
    assert "secret-value" not in json.dumps(rec)


def test_methods_bodies_and_content_type(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    """PUT and PATCH send the payload like POST; GET and DELETE send no body even with a stored
    payload and no Content-Type; a POST without payload has no body; a trigger's own Content-Type
    wins over ours."""
    url = receiver.url
    triggers = [
        _trigger(url + "/put", method="PUT", payload={"m": "PUT"}),
        _trigger(url + "/patch", method="PATCH", payload={"m": "PATCH"}),
        _trigger(url + "/get", method="GET", payload={"stored": "not sent"}),
        _trigger(url + "/delete", method="DELETE", payload={"stored": "not sent"}),
        _trigger(url + "/empty", method="POST"),
        _trigger(url + "/ct", payload={"a": 1}, headers={"content-type": "application/vnd.x+json"}),
    ]
    store.replace(conn, WS, triggers, now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.2).fired == len(triggers)
    _deliver(conn, settings)

    got = {r.path: r for r in receiver.wait_for(lambda rs: len(rs) >= len(triggers), 1)}
    assert sorted(got) == sorted(["/put", "/patch", "/get", "/delete", "/empty", "/ct"])
    for i, t in enumerate(triggers):
        r = got[t.url.removeprefix(url)]
        assert r.method == t.method
        assert _h(r)["x-scheduler-trigger"] == f"ws:{i}"
        assert _h(r)["idempotency-key"] == f"ws:{i}@2027-01-15T08:00:01Z"
        assert _h(r)["x-scheduler-scheduled-at"] == "2027-01-15T08:00:01Z"
        assert _h(r)["x-scheduler-attempt"] == "1"
        assert _h(r)["user-agent"] == f"scheduler-api/{__version__}"
    for path, method in (("/put", "PUT"), ("/patch", "PATCH")):
        assert got[path].json() == {"m": method}
        assert _h(got[path])["content-type"] == "application/json"
    for path in ("/get", "/delete", "/empty"):
        r = got[path]
        assert r.body == b""
        assert int(_h(r).get("content-length", "0")) == 0
        assert "transfer-encoding" not in _h(r)
    for path in ("/get", "/delete", "/empty"):
        assert "content-type" not in _h(got[path])  # no body, no type
    assert _h(got["/ct"])["content-type"] == "application/vnd.x+json"
    assert got["/ct"].json() == {"a": 1}


# --- 2-4. retries and final outcomes -------------------------------------------------------------


@pytest.mark.parametrize("name", ["User-Agent", "user-agent"])
def test_a_user_agent_of_the_trigger_is_replaced_by_ours(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, name: str
) -> None:
    store.replace(conn, WS, [_trigger(receiver.url + "/ua", headers={name: "mine/1", "X-A": "1"})], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    _deliver(conn, settings)
    (r,) = receiver.to("/ua")
    # One User-Agent line on the wire (with two, many servers would read the first).
    assert [v for k, v in r.header_lines if k.lower() == "user-agent"] == [f"scheduler-api/{__version__}"]
    assert _h(r)["x-a"] == "1"


def test_a_compressed_response_is_recorded_as_text(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    text = '{"status":"accepted","detail":"' + "x" * 40 + '"}'
    receiver.on("/gz", (200, 0, {"Content-Encoding": "gzip"}, gzip.compress(text.encode())))
    store.replace(conn, WS, [_trigger(receiver.url + "/gz")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).fired == 1
    _deliver(conn, settings)
    (r,) = receiver.to("/gz")
    assert "gzip" in _h(r)["accept-encoding"]
    rec = _record(conn, "ws:0", T + 1)
    assert rec is not None and rec["outcome"] == "delivered"
    assert rec["attempts"][0]["body"] == text


def test_connections_are_reused_across_firings_and_batches(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    # Two batches (two RQ jobs) of 20 firings, 2 in flight: one worker delivers them all over at
    # most two connections, kept by its shared client from one job to the next.
    settings = _settings(redis_url, worker_concurrency=2, scheduler_batch_size=20)
    store.replace(conn, WS, [_trigger(f"{receiver.url}/c/{i}") for i in range(40)], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.3).pushed == 2
    _deliver(conn, settings)
    assert len(receiver.requests) == 40
    assert 1 <= len({r.peer for r in receiver.requests}) <= 2


def test_two_failures_then_success_is_three_attempts_with_one_idempotency_key(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    receiver.on("/flaky", (500, 0), (503, 0))
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/flaky")])
    _drive(conn, queue, settings, lambda: _final(conn, "ws:0", due))
    _keep_driving(conn, queue, settings, 0.3)

    reqs = receiver.to("/flaky")
    assert _attempts(reqs) == [1, 2, 3]
    assert {_h(r)["idempotency-key"] for r in reqs} == {f"ws:0@{_iso(due)}"}
    assert {_h(r)["x-scheduler-scheduled-at"] for r in reqs} == {_iso(due)}
    rec = _record(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    assert [a["attempt"] for a in rec["attempts"]] == [1, 2, 3]
    assert [a["status"] for a in rec["attempts"]] == [500, 503, 200]
    assert conn.zscore(keys.done(WS), rec["id"]) is not None
    assert conn.zscore(keys.failed(WS), rec["id"]) is None
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0


def test_always_failing_is_four_attempts_then_failed(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    assert settings.delivery_max_retries == 3
    receiver.on("/down", *[(500, 0)] * 10)
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/down")])
    _drive(conn, queue, settings, lambda: _final(conn, "ws:0", due))
    _keep_driving(conn, queue, settings, 0.6)  # longer than every backoff: no fifth attempt

    reqs = receiver.to("/down")
    assert _attempts(reqs) == [1, 2, 3, 4]
    assert len({_h(r)["idempotency-key"] for r in reqs}) == 1
    rec = _record(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "failed"
    assert [a["status"] for a in rec["attempts"]] == [500] * 4
    assert conn.zscore(keys.failed(WS), rec["id"]) is not None
    assert conn.zscore(keys.done(WS), rec["id"]) is None
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0


def test_non_2xx_statuses_are_failures(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = _settings(redis_url, delivery_max_retries=1)
    receiver.on("/302", (302, 0), (302, 0))
    receiver.on("/404", (404, 0), (404, 0))
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/302"), _trigger(receiver.url + "/404")])
    _drive(conn, queue, settings, lambda: conn.zcard(keys.failed(WS)) == 2)
    for i, status in enumerate((302, 404)):
        assert _attempts(receiver.to(f"/{status}")) == [1, 2]
        rec = _record(conn, f"ws:{i}", due)
        assert rec is not None and rec["outcome"] == "failed"
        assert [a["status"] for a in rec["attempts"]] == [status, status]


def test_no_retries_means_exactly_one_attempt(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = _settings(redis_url, delivery_max_retries=0)
    receiver.on("/once", *[(500, 0)] * 5)
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/once")])
    _deliver(conn, settings)
    rec = _record(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"
    assert len(rec["attempts"]) == 1
    assert conn.zcard(keys.RETRIES) == 0
    _keep_driving(conn, queue, settings, 0.3)
    assert _attempts(receiver.to("/once")) == [1]


def test_connection_refused_is_a_failed_attempt(conn: Redis, redis_url: str, queue: Queue) -> None:
    settings = _settings(redis_url, delivery_max_retries=0)
    from scheduler_api.embedded_redis import free_port

    due = _fire_now(conn, queue, settings, [_trigger(f"http://127.0.0.1:{free_port()}/x")])
    _deliver(conn, settings)
    rec = _record(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"
    (attempt,) = rec["attempts"]
    assert attempt["status"] is None
    assert attempt["error"]


def test_timeout_is_a_failed_attempt_and_is_retried(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = _settings(redis_url, delivery_timeout_seconds=0.3, delivery_max_retries=1)
    receiver.on("/slow", (200, 1.0))  # the first answer comes too late; the retry is answered at once
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/slow")])
    _deliver(conn, settings)
    rec = _record(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "retrying"
    assert [a["error"] for a in rec["attempts"]] == ["timeout"]
    assert conn.zcard(keys.RETRIES) == 1

    _drive(conn, queue, settings, lambda: _final(conn, "ws:0", due))
    assert _attempts(receiver.to("/slow")) == [1, 2]
    rec = _record(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    first, second = rec["attempts"]
    assert first["error"] == "timeout"
    assert first["status"] is None
    assert 250 <= first["duration_ms"] < 900  # gave up after ~0.3 s, not after the 1 s answer
    assert second["status"] == 200 and second["error"] is None
    time.sleep(0.8)  # let the receiver's late answer finish before it is shut down


def test_timeout_covers_a_response_body_that_never_ends(conn: Redis, redis_url: str, queue: Queue) -> None:
    """The timeout bounds the whole exchange: a target that answers its headers at once and then
    trickles the body is a timed-out attempt, not a request that hangs the lane."""
    import socket

    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def trickle() -> None:
        conn_, _ = server.accept()
        with conn_:
            conn_.recv(65536)
            conn_.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn_.sendall(b"x")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        settings = _settings(redis_url, delivery_timeout_seconds=0.5, delivery_max_retries=0)
        due = _fire_now(conn, queue, settings, [_trigger(f"http://127.0.0.1:{port}/trickle")])
        started = time.monotonic()
        _deliver(conn, settings)
        assert time.monotonic() - started < 5
        rec = _record(conn, "ws:0", due)
        assert rec is not None and rec["outcome"] == "failed"
        (attempt,) = rec["attempts"]
        assert attempt["error"] == "timeout" and attempt["status"] is None
        assert 400 <= attempt["duration_ms"] < 2000
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_backoff_seconds_formula() -> None:
    assert retry.backoff_seconds(1.0, 1, 1.0) == 1.0
    assert retry.backoff_seconds(1.0, 1, 0.0) == 0.5
    assert retry.backoff_seconds(1.0, 2, 1.0) == 2.0
    assert retry.backoff_seconds(1.0, 3, 1.0) == 4.0
    assert retry.backoff_seconds(0.2, 3, 0.5) == pytest.approx(0.2 * 4 * 0.75)
    assert retry.backoff_seconds(0.0, 5, 0.7) == 0.0
    for n in range(1, 8):
        for rand in (0.0, 0.3, 0.999):
            d = retry.backoff_seconds(2.0, n, rand)
            assert 2.0 * 2 ** (n - 1) * 0.5 <= d <= 2.0 * 2 ** (n - 1)
        assert retry.backoff_seconds(2.0, n + 1, 0.0) > retry.backoff_seconds(2.0, n, 0.0)


def test_retries_are_spaced_by_growing_backoff(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    base = 0.2
    settings = _settings(redis_url, delivery_backoff_seconds=base)
    receiver.on("/b", *[(500, 0)] * 4)
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/b")])
    _drive(conn, queue, settings, lambda: _final(conn, "ws:0", due), timeout=10)

    reqs = receiver.to("/b")
    assert _attempts(reqs) == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= base * 2 ** (n - 1) * 0.5 - 0.01, gaps
    assert gaps[2] > gaps[0], gaps
    assert sum(gaps) >= base * (1 + 2 + 4) * 0.5
    # The retry entries themselves were due after the backoff computed from the attempt's end.
    rec = _record(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"


def test_backoff_without_jitter_grows_exactly(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = 0.25
    monkeypatch.setattr(retry.random, "random", lambda: 1.0)  # the top of the jitter range
    settings = _settings(redis_url, delivery_backoff_seconds=base)
    receiver.on("/bj", *[(500, 0)] * 4)
    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/bj")])
    _drive(conn, queue, settings, lambda: _final(conn, "ws:0", due), timeout=10)
    reqs = receiver.to("/bj")
    assert _attempts(reqs) == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= base * 2 ** (n - 1) - 0.01, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps


# --- 6-7. a firing's identity ----------------------------------------------------------------------


def test_idempotency_key_is_per_firing(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    # T is in the future of the real clock, so retries (due at real time + backoff) are moved by
    # the very next tick: every tick here moves the retries left by the previous delivery.
    receiver.on("/k", (500, 0), (200, 0), (200, 0))
    store.replace(conn, WS, [_trigger(receiver.url + "/k")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    _deliver(conn, settings)  # firing T+1, attempt 1: 500
    ticking.tick(conn, queue, settings, now=T + 2.5)  # firing T+2 and the retry of T+1
    _deliver(conn, settings)

    reqs = receiver.to("/k")
    assert len(reqs) == 3
    by_key: dict[str, list[Received]] = {}
    for r in reqs:
        by_key.setdefault(_h(r)["idempotency-key"], []).append(r)
    first, second = f"ws:0@{_iso(T + 1)}", f"ws:0@{_iso(T + 2)}"
    assert set(by_key) == {first, second}
    assert _attempts(by_key[first]) == [1, 2]
    assert _attempts(by_key[second]) == [1]
    assert {_h(r)["x-scheduler-scheduled-at"] for r in by_key[first]} == {_iso(T + 1)}
    assert _h(by_key[second][0])["x-scheduler-scheduled-at"] == _iso(T + 2)


def test_each_firing_is_its_own_unit(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    # Firing T+1 fails once and again; firing T+2 succeeds at its first attempt meanwhile.
    receiver.on("/u", (500, 0), (200, 0), (500, 0), (200, 0))
    store.replace(conn, WS, [_trigger(receiver.url + "/u")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.2)
    _deliver(conn, settings)  # T+1 #1 -> 500
    assert ticking.tick(conn, queue, settings, now=T + 1.9).retried == 1
    _deliver(conn, settings)  # T+1 #2 -> 200 ... unless the order is taken by the next line
    r2 = ticking.tick(conn, queue, settings, now=T + 2.2)
    assert (r2.fired, r2.retried) == (1, 0)
    _deliver(conn, settings)  # T+2 #1 -> 500
    ticking.tick(conn, queue, settings, now=T + 2.8)
    _deliver(conn, settings)  # T+2 #2 -> 200

    first = _record(conn, "ws:0", T + 1)
    second = _record(conn, "ws:0", T + 2)
    assert first is not None and second is not None
    assert first["id"] != second["id"]
    assert [(a["attempt"], a["status"]) for a in first["attempts"]] == [(1, 500), (2, 200)]
    assert [(a["attempt"], a["status"]) for a in second["attempts"]] == [(1, 500), (2, 200)]
    assert first["outcome"] == second["outcome"] == "delivered"
    reqs = receiver.to("/u")
    assert [(_h(r)["x-scheduler-scheduled-at"], _h(r)["x-scheduler-attempt"]) for r in reqs] == [
        (_iso(T + 1), "1"),
        (_iso(T + 1), "2"),
        (_iso(T + 2), "1"),
        (_iso(T + 2), "2"),
    ]


def test_a_new_firing_starts_at_attempt_one_while_the_previous_one_retries(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    # The failing firing and the next one are in flight in the same round.
    receiver.on("/p", (500, 0), (500, 0))
    store.replace(conn, WS, [_trigger(receiver.url + "/p")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    _deliver(conn, settings)  # T+1 #1 -> 500
    r = ticking.tick(conn, queue, settings, now=T + 2.5)
    assert (r.fired, r.retried) == (1, 1)
    _deliver(conn, settings)  # T+1 #2 and T+2 #1: one gets 500, the other 200
    ticking.tick(conn, queue, settings, now=T + 2.9)  # whichever failed is retried
    _deliver(conn, settings)

    reqs = receiver.to("/p")
    at2 = [r for r in reqs if _h(r)["x-scheduler-scheduled-at"] == _iso(T + 2)]
    at1 = [r for r in reqs if _h(r)["x-scheduler-scheduled-at"] == _iso(T + 1)]
    assert _attempts(at2)[0] == 1
    assert _attempts(at1)[:2] == [1, 2]
    rec1, rec2 = _record(conn, "ws:0", T + 1), _record(conn, "ws:0", T + 2)
    assert rec1 is not None and rec2 is not None
    assert rec1["outcome"] == rec2["outcome"] == "delivered"
    assert [a["attempt"] for a in rec2["attempts"]] == list(range(1, len(at2) + 1))
    assert [a["attempt"] for a in rec1["attempts"]] == list(range(1, len(at1) + 1))
    assert len(at1) + len(at2) == 4


# --- 8. removed triggers (retries) -----------------------------------------------------------------


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_pending_retry_of_a_removed_trigger_is_dropped(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, change: str
) -> None:
    receiver.on("/r", *[(500, 0)] * 5)
    store.replace(conn, WS, [_trigger(receiver.url + "/r", cron_expr=_once_cron(T + 1))], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    _deliver(conn, settings)
    assert conn.zcard(keys.RETRIES) == 1
    if change == "delete":
        store.delete(conn, WS)
    else:  # same jobId ws:0, new definition
        store.replace(conn, WS, [_trigger(receiver.url + "/other", cron_expr=_once_cron(T + 100))], now=lambda: T + 2)
    for i in range(4):
        ticking.tick(conn, queue, settings, now=T + 3 + i * 0.2)
        _deliver(conn, settings)
    assert _attempts(receiver.to("/r")) == [1]
    assert receiver.to("/other") == []
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0
    assert _record(conn, "ws:0", T + 1) is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []


def test_trigger_deleted_while_its_batch_is_being_delivered_is_not_sent(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    """A firing waiting in its batch for a free slot (WORKER_CONCURRENCY) has not started: deleting
    its trigger meanwhile must drop it, as it would a firing still in the queue. The first request
    takes 0.15 s, less than the batch's periodic re-read (0.25 s): the worker hears of the delete."""
    settings = _settings(redis_url, worker_concurrency=1)
    receiver.on("/a", (200, 0.15))
    receiver.on("/b", (200, 0.15))
    store.replace(conn, "a", [_trigger(receiver.url + "/a")], now=lambda: T)
    store.replace(conn, "b", [_trigger(receiver.url + "/b")], now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.2).fired == 2
    assert queue.count == 1  # one batch: the second firing waits for the first

    deleted: list[str] = []

    def delete_the_other() -> None:
        reqs = receiver.wait_for(lambda rs: len(rs) >= 1, 5)
        if reqs:
            other = "b" if reqs[0].path == "/a" else "a"
            store.delete(conn, other)
            deleted.append(other)

    th = threading.Thread(target=delete_the_other)
    th.start()
    _deliver(conn, settings)
    th.join(5)
    assert len(deleted) == 1
    assert [r.path for r in receiver.requests] == ["/a" if deleted[0] == "b" else "/b"]
    assert firings.get_record(conn, f"{deleted[0]}:0@{_iso(T + 1)}") is None
    assert conn.keys(keys.BATCH_PREFIX + "*") == []


# --- 11. retention ---------------------------------------------------------------------------------


def test_completed_and_failed_records_are_trimmed_by_count(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = _settings(redis_url, completed_keep_count=5, failed_keep_count=3, delivery_max_retries=0)
    receiver.on("/bad", *[(500, 0)] * 20)
    store.replace(conn, WS, [_trigger(receiver.url + "/ok"), _trigger(receiver.url + "/bad")], now=lambda: T)
    for i in range(1, 13):
        ticking.tick(conn, queue, settings, now=T + i + 0.5)
        _deliver(conn, settings)  # one delivery per round: finish order is scheduled order
    assert len(receiver.to("/ok")) == 12 and len(receiver.to("/bad")) == 12

    done = {m.decode() for m in conn.zrange(keys.done(WS), 0, -1)}
    failed = {m.decode() for m in conn.zrange(keys.failed(WS), 0, -1)}
    assert done == {f"ws:0@{_iso(T + i)}" for i in range(8, 13)}
    assert failed == {f"ws:1@{_iso(T + i)}" for i in range(10, 13)}
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == done | failed
    assert _record(conn, "ws:0", T + 1) is None
    rec = _record(conn, "ws:0", T + 12)
    assert rec is not None and rec["outcome"] == "delivered"


def test_missed_records_count_as_failed_for_retention(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = _settings(redis_url, failed_keep_count=2, misfire_grace_seconds=0)
    store.replace(conn, WS, [_trigger(receiver.url + "/m")], now=lambda: T)
    for i in range(1, 6):  # each tick is 0.5 s late with no grace: missed
        assert ticking.tick(conn, queue, settings, now=T + i + 0.5).missed == 1
    assert conn.zcard(keys.failed(WS)) == 2
    assert conn.hlen(keys.records(WS)) == 2
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == {f"ws:0@{_iso(T + 4)}", f"ws:0@{_iso(T + 5)}"}
    _deliver(conn, settings)
    assert receiver.requests == []


def test_completed_records_are_trimmed_by_age(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = _settings(redis_url, completed_keep_seconds=60, completed_keep_count=100)
    now = time.time()
    old = {f"ws:9@old-{i}": now - 3600 - i for i in range(3)}
    recent = {"ws:9@recent": now - 30}
    for fid, at in {**old, **recent}.items():
        record = Record.delivered(firings.Firing(fid, "ws:9", "v", at), WS, [], finished_at=at)
        firings.record(
            conn,
            "no-batch",
            [firings.Outcome.final(record)],
            now=at,
            retention=firings.Retention(keep_seconds=10**9, keep_done=100, keep_failed=100, keep_history=1000),
            finished=False,
        )
    assert conn.zcard(keys.done(WS)) == 4

    due = _fire_now(conn, queue, settings, [_trigger(receiver.url + "/age")])
    _deliver(conn, settings)
    current = f"ws:0@{_iso(due)}"
    assert {m.decode() for m in conn.zrange(keys.done(WS), 0, -1)} == {"ws:9@recent", current}
    assert {k.decode() for k in conn.hkeys(keys.records(WS))} == {"ws:9@recent", current}
    assert {m.decode() for m in conn.zrange(keys.history(WS), 0, -1)} == {"ws:9@recent", current}


def test_redis_does_not_grow_at_a_constant_trigger_count(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = _settings(redis_url, completed_keep_count=10, failed_keep_count=4, delivery_max_retries=1)
    receiver.on("/bad", *[(500, 0)] * 1000)
    triggers = [_trigger(receiver.url + "/ok") for _ in range(4)] + [_trigger(receiver.url + "/bad")]
    store.replace(conn, WS, triggers, now=lambda: T)

    def persistent_keys() -> set[str]:
        # Keys with a TTL (rq's per-worker entries of the burst workers) expire by themselves.
        return {k.decode() for k in conn.keys("*") if conn.ttl(k) == -1}

    sizes = []
    for i in range(1, 21):
        ticking.tick(conn, queue, settings, now=T + i + 0.5)  # T is ahead of the real clock:
        _deliver(conn, settings)  # the retry of the previous round is moved at once
        sizes.append((len(persistent_keys()), conn.hlen(keys.records(WS)), conn.dbsize()))
    assert len(receiver.to("/ok")) == 4 * 20
    assert len(receiver.to("/bad")) >= 2 * 19
    assert conn.zcard(keys.done(WS)) == 10
    assert conn.zcard(keys.failed(WS)) == 4
    assert max(s[1] for s in sizes) <= 10 + 4 + 1  # + the latest /bad firing, "retrying"
    assert sizes[-1][0] == sizes[10][0], sizes
    assert max(s[0] for s in sizes[10:]) <= sizes[10][0]
    assert not any(k.startswith(("rq:job:", keys.BATCH_PREFIX)) for k in persistent_keys())
    assert conn.zcard(keys.SCHEDULE) == 5
    assert conn.zcard(keys.OUTBOX) == 0 and conn.zcard(keys.LEASES) == 0


# --- 14. the plain rq worker ----------------------------------------------------------------------


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
    assert delivery._runtime is None
    receiver.on("/plain/3", (500, 0))
    triggers = [_trigger(f"{receiver.url}/plain/{i}", payload={"i": i}) for i in range(5)]
    store.replace(conn, WS, triggers, now=lambda: T)
    assert ticking.tick(conn, queue, settings, now=T + 1.4).fired == 5
    assert queue.count == 1

    SimpleWorker([queue], connection=conn).work(burst=True)

    reqs = receiver.requests
    assert sorted(r.path for r in reqs) == [f"/plain/{i}" for i in range(5)]
    for r in reqs:
        i = int(r.path.rsplit("/", 1)[1])
        assert r.json() == {"i": i}
        assert _h(r)["idempotency-key"] == f"ws:{i}@{_iso(T + 1)}"
        assert _h(r)["x-scheduler-attempt"] == "1"
    for i in (0, 1, 2, 4):
        rec = _record(conn, f"ws:{i}", T + 1)
        assert rec is not None and rec["outcome"] == "delivered"
    rec = _record(conn, "ws:3", T + 1)
    assert rec is not None and rec["outcome"] == "retrying"
    assert conn.zcard(keys.RETRIES) == 1  # the failure is retried by the settings read from the environment

    assert ticking.tick(conn, queue, settings, now=T + 1.6).retried == 1
    SimpleWorker([queue], connection=conn).work(burst=True)
    rec = _record(conn, "ws:3", T + 1)
    assert rec is not None and rec["outcome"] == "delivered"
    assert [a["status"] for a in rec["attempts"]] == [500, 200]
    assert queue.count == 0


def test_run_batch_outside_an_rq_job_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        delivery.run_batch(uuid.uuid4().hex)


def test_iso_format_of_scheduled_times() -> None:
    assert cron.iso(T + 1) == "2027-01-15T08:00:01Z"
    assert cron.iso(T + 1.25) == "2027-01-15T08:00:01.250Z"


def test_iso_is_datetime_isoformat_in_milliseconds() -> None:
    """`iso` is hand-rolled for speed: it must equal datetime's rounding and truncation exactly
    (firing ids contain it), including fractions that round to a whole second or to zero."""
    import random

    def reference(ts: float) -> str:
        dt = datetime.fromtimestamp(ts, UTC)
        spec = "milliseconds" if dt.microsecond else "seconds"
        return dt.isoformat(timespec=spec).replace("+00:00", "Z")

    rand = random.Random(3)
    values = [rand.uniform(0, 4e9) for _ in range(20_000)]
    values += [T + k / 1e6 + d for k in range(0, 1_000_000, 997) for d in (0.0, 4.9e-7, 5e-7, 5.1e-7, -5e-7)]
    values += [T + 0.9999995, T + 0.0000005, T + 0.0005, T + 0.999, 0.0]
    assert [cron.iso(v) for v in values] == [reference(v) for v in values]


def test_cookies_set_by_one_target_never_travel_with_another_request(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """One HTTP client serves every workspace: a cookie workspace A's target sets must not be sent
    with workspace B's request to the same host (nor with A's own next request)."""
    receiver.on("/a", (200, 0, {"Set-Cookie": "session=secret-of-workspace-A; Path=/"}))
    store.replace(conn, "a", [_trigger(receiver.url + "/a")], now=lambda: T)
    store.replace(conn, "b", [_trigger(receiver.url + "/b")], now=lambda: T)
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
