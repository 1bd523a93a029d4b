"""`scheduler_api.delivery.retry`: which outcomes are retried and when (backoff with jitter), and a
firing's identity across its attempts (one Idempotency-Key per firing, attempts numbered from 1).

Retries are due at real times (time.time() + backoff), so most tests here drive ticks with the real
clock on triggers whose cron matches one second only (`once_cron`): the real-clock ticks never fire
a second time.
"""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.delivery import retry
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys
from tests.support.clock import T, iso_second
from tests.support.engine import attempts, deliver, drive, fire_now, is_final, keep_driving, record_of
from tests.support.factories import WS, make_engine_settings, make_trigger
from tests.support.receiver import Received, Receiver, headers_of


def test_two_failures_then_success_is_three_attempts_with_one_idempotency_key(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    receiver.on("/flaky", (500, 0), (503, 0))
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/flaky")])
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due))
    keep_driving(conn, queue, settings, 0.3)

    reqs = receiver.to("/flaky")
    assert attempts(reqs) == [1, 2, 3]
    assert {headers_of(r)["idempotency-key"] for r in reqs} == {f"ws:0@{iso_second(due)}"}
    assert {headers_of(r)["x-scheduler-scheduled-at"] for r in reqs} == {iso_second(due)}
    rec = record_of(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "delivered"
    assert [a["attempt"] for a in rec["attempts"]] == [1, 2, 3]
    assert [a["status"] for a in rec["attempts"]] == [500, 503, 200]
    assert conn.zscore(keys.done(WS), rec["id"]) is not None
    assert conn.zscore(keys.failed(WS), rec["id"]) is None
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0


@pytest.mark.slow
def test_always_failing_is_four_attempts_then_failed(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    assert settings.delivery_max_retries == 3
    receiver.on("/down", *[(500, 0)] * 10)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/down")])
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due))
    keep_driving(conn, queue, settings, 0.6)  # longer than every backoff: no fifth attempt

    reqs = receiver.to("/down")
    assert attempts(reqs) == [1, 2, 3, 4]
    assert len({headers_of(r)["idempotency-key"] for r in reqs}) == 1
    rec = record_of(conn, "ws:0", due)
    assert rec is not None
    assert rec["outcome"] == "failed"
    assert [a["status"] for a in rec["attempts"]] == [500] * 4
    assert conn.zscore(keys.failed(WS), rec["id"]) is not None
    assert conn.zscore(keys.done(WS), rec["id"]) is None
    assert conn.zcard(keys.RETRIES) == 0 and conn.hlen(keys.RETRY_DATA) == 0


def test_non_2xx_statuses_are_failures(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=1)
    receiver.on("/302", (302, 0), (302, 0))
    receiver.on("/404", (404, 0), (404, 0))
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/302"), make_trigger(receiver.url + "/404")])
    drive(conn, queue, settings, lambda: conn.zcard(keys.failed(WS)) == 2)
    for i, status in enumerate((302, 404)):
        assert attempts(receiver.to(f"/{status}")) == [1, 2]
        rec = record_of(conn, f"ws:{i}", due)
        assert rec is not None and rec["outcome"] == "failed"
        assert [a["status"] for a in rec["attempts"]] == [status, status]


def test_no_retries_means_exactly_one_attempt(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=0)
    receiver.on("/once", *[(500, 0)] * 5)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/once")])
    deliver(conn, settings)
    rec = record_of(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"
    assert len(rec["attempts"]) == 1
    assert conn.zcard(keys.RETRIES) == 0
    keep_driving(conn, queue, settings, 0.3)
    assert attempts(receiver.to("/once")) == [1]


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


@pytest.mark.slow
def test_retries_are_spaced_by_growing_backoff(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    base = 0.2
    settings = make_engine_settings(redis_url, delivery_backoff_seconds=base)
    receiver.on("/b", *[(500, 0)] * 4)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/b")])
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due), timeout=10)

    reqs = receiver.to("/b")
    assert attempts(reqs) == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= base * 2 ** (n - 1) * 0.5 - 0.01, gaps
    assert gaps[2] > gaps[0], gaps
    assert sum(gaps) >= base * (1 + 2 + 4) * 0.5
    # The retry entries themselves were due after the backoff computed from the attempt's end.
    rec = record_of(conn, "ws:0", due)
    assert rec is not None and rec["outcome"] == "failed"


@pytest.mark.slow
def test_backoff_without_jitter_grows_exactly(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = 0.25
    monkeypatch.setattr(retry.random, "random", lambda: 1.0)  # the top of the jitter range
    settings = make_engine_settings(redis_url, delivery_backoff_seconds=base)
    receiver.on("/bj", *[(500, 0)] * 4)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/bj")])
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due), timeout=10)
    reqs = receiver.to("/bj")
    assert attempts(reqs) == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= base * 2 ** (n - 1) - 0.01, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps


def test_idempotency_key_is_per_firing(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    # T is in the future of the real clock, so retries (due at real time + backoff) are moved by
    # the very next tick: every tick here moves the retries left by the previous delivery.
    receiver.on("/k", (500, 0), (200, 0), (200, 0))
    edits.replace(conn, WS, [make_trigger(receiver.url + "/k")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    deliver(conn, settings)  # firing T+1, attempt 1: 500
    ticking.tick(conn, queue, settings, now=T + 2.5)  # firing T+2 and the retry of T+1
    deliver(conn, settings)

    reqs = receiver.to("/k")
    assert len(reqs) == 3
    by_key: dict[str, list[Received]] = {}
    for r in reqs:
        by_key.setdefault(headers_of(r)["idempotency-key"], []).append(r)
    first, second = f"ws:0@{iso_second(T + 1)}", f"ws:0@{iso_second(T + 2)}"
    assert set(by_key) == {first, second}
    assert attempts(by_key[first]) == [1, 2]
    assert attempts(by_key[second]) == [1]
    assert {headers_of(r)["x-scheduler-scheduled-at"] for r in by_key[first]} == {iso_second(T + 1)}
    assert headers_of(by_key[second][0])["x-scheduler-scheduled-at"] == iso_second(T + 2)


def test_each_firing_is_its_own_unit(conn: Redis, settings: Settings, queue: Queue, receiver: Receiver) -> None:
    # Firing T+1 fails once and again; firing T+2 succeeds at its first attempt meanwhile.
    receiver.on("/u", (500, 0), (200, 0), (500, 0), (200, 0))
    edits.replace(conn, WS, [make_trigger(receiver.url + "/u")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.2)
    deliver(conn, settings)  # T+1 #1 -> 500
    assert ticking.tick(conn, queue, settings, now=T + 1.9).retried == 1
    deliver(conn, settings)  # T+1 #2 -> 200 ... unless the order is taken by the next line
    r2 = ticking.tick(conn, queue, settings, now=T + 2.2)
    assert (r2.fired, r2.retried) == (1, 0)
    deliver(conn, settings)  # T+2 #1 -> 500
    ticking.tick(conn, queue, settings, now=T + 2.8)
    deliver(conn, settings)  # T+2 #2 -> 200

    first = record_of(conn, "ws:0", T + 1)
    second = record_of(conn, "ws:0", T + 2)
    assert first is not None and second is not None
    assert first["id"] != second["id"]
    assert [(a["attempt"], a["status"]) for a in first["attempts"]] == [(1, 500), (2, 200)]
    assert [(a["attempt"], a["status"]) for a in second["attempts"]] == [(1, 500), (2, 200)]
    assert first["outcome"] == second["outcome"] == "delivered"
    reqs = receiver.to("/u")
    assert [(headers_of(r)["x-scheduler-scheduled-at"], headers_of(r)["x-scheduler-attempt"]) for r in reqs] == [
        (iso_second(T + 1), "1"),
        (iso_second(T + 1), "2"),
        (iso_second(T + 2), "1"),
        (iso_second(T + 2), "2"),
    ]


def test_a_new_firing_starts_at_attempt_one_while_the_previous_one_retries(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    # The failing firing and the next one are in flight in the same round.
    receiver.on("/p", (500, 0), (500, 0))
    edits.replace(conn, WS, [make_trigger(receiver.url + "/p")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1.5)
    deliver(conn, settings)  # T+1 #1 -> 500
    r = ticking.tick(conn, queue, settings, now=T + 2.5)
    assert (r.fired, r.retried) == (1, 1)
    deliver(conn, settings)  # T+1 #2 and T+2 #1: one gets 500, the other 200
    ticking.tick(conn, queue, settings, now=T + 2.9)  # whichever failed is retried
    deliver(conn, settings)

    reqs = receiver.to("/p")
    at2 = [r for r in reqs if headers_of(r)["x-scheduler-scheduled-at"] == iso_second(T + 2)]
    at1 = [r for r in reqs if headers_of(r)["x-scheduler-scheduled-at"] == iso_second(T + 1)]
    assert attempts(at2)[0] == 1
    assert attempts(at1)[:2] == [1, 2]
    rec1, rec2 = record_of(conn, "ws:0", T + 1), record_of(conn, "ws:0", T + 2)
    assert rec1 is not None and rec2 is not None
    assert rec1["outcome"] == rec2["outcome"] == "delivered"
    assert [a["attempt"] for a in rec2["attempts"]] == list(range(1, len(at2) + 1))
    assert [a["attempt"] for a in rec1["attempts"]] == list(range(1, len(at1) + 1))
    assert len(at1) + len(at2) == 4
