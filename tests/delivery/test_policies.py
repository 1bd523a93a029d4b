"""A trigger's delivery policy on the worker's side (scheduler_api.delivery.attempt and .retry):
its own timeout and retries, Retry-After, final statuses and success checks, against the real
receiver through the real scheduler tick and worker.

Retries are due at real times (time.time() + backoff), so these tests fire triggers whose cron
matches one recent second (`fire_now`) and tick with the real clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.delivery import retry
from scheduler_api.delivery.attempt import Attempt, retry_after_seconds
from scheduler_api.delivery.retry import RetryPolicy, classify
from scheduler_api.policy import Policy, StatusSet
from scheduler_api.settings import Settings
from scheduler_api.storage import keys
from scheduler_api.storage.firings import Firing
from scheduler_api.storage.history import OutcomeKind
from scheduler_api.storage.triggers import StoredTrigger
from scheduler_api.triggers import RetryConfig, SuccessCheck
from tests.support.clock import parse
from tests.support.engine import attempts, deliver, drive, fire_now, is_final, keep_driving, record_of
from tests.support.factories import WS, make_engine_settings, make_trigger
from tests.support.receiver import Receiver


def record(conn: Redis, i: int, due: float) -> dict[str, Any]:
    rec = record_of(conn, f"ws:{i}", due)
    assert rec is not None
    return rec


# -- timeout_seconds ----------------------------------------------------------------------------


@pytest.mark.slow  # a trigger's timeout is a whole second at least
def test_a_trigger_timeout_bounds_each_of_its_attempts(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    """Three triggers to a target that answers after 1.3 s: its own 1 s times out and says 1s, its
    own 2 s gets the answer, the one without a timeout has the setting's 0.5 s."""
    settings = make_engine_settings(redis_url, delivery_timeout_seconds=0.5, delivery_max_retries=0)
    for path in ("/t1", "/t2", "/t0"):
        receiver.on(path, (200, 1.3))
    url = receiver.url
    triggers = [
        make_trigger(url + "/t1", timeout_seconds=1),
        make_trigger(url + "/t2", timeout_seconds=2),
        make_trigger(url + "/t0"),
    ]
    due = fire_now(conn, queue, settings, triggers)
    deliver(conn, settings)

    (own,) = record(conn, 0, due)["attempts"]
    assert (own["status"], own["error"], own["message"]) == (None, "timeout", "no complete response within 1s")
    assert 950 <= own["duration_ms"] < 1250
    longer = record(conn, 1, due)
    assert longer["outcome"] == "delivered"
    assert [a["status"] for a in longer["attempts"]] == [200]
    (default,) = record(conn, 2, due)["attempts"]
    assert (default["error"], default["message"]) == ("timeout", "no complete response within 0.5s")
    assert default["duration_ms"] < 950


# -- retry --------------------------------------------------------------------------------------


def test_a_trigger_retry_sets_the_attempt_count_and_spacing(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_retries 2 (the setting says 3) is three attempts; backoff 0.1 doubles to 0.2, capped at
    0.15 by max_backoff_seconds (jitter at the top of its range: the delays are exact)."""
    monkeypatch.setattr(retry.random, "random", lambda: 1.0)
    assert settings.delivery_max_retries == 3
    receiver.on("/r", *[(500, 0)] * 5)
    cfg = RetryConfig(max_retries=2, backoff_seconds=0.1, max_backoff_seconds=0.15)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/r", retry=cfg)])
    retrying: dict[int, dict[str, Any]] = {}  # the record while it waits, by attempts made

    def final() -> bool:
        rec = record(conn, 0, due)
        if rec["outcome"] == "retrying":
            retrying[len(rec["attempts"])] = rec
        return rec["outcome"] != "retrying"

    drive(conn, queue, settings, final)
    keep_driving(conn, queue, settings, 0.25)  # no fourth attempt

    reqs = receiver.to("/r")
    assert attempts(reqs) == [1, 2, 3]
    gaps = [b.at - a.at for a, b in zip(reqs, reqs[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.15, gaps
    for n, delay in ((1, 0.1), (2, 0.15)):  # 0.2 capped to 0.15
        rec = retrying[n]
        last = rec["attempts"][-1]
        ended = parse(last["started_at"]) + last["duration_ms"] / 1000
        assert delay - 0.002 <= parse(rec["next_attempt_at"]) - ended < delay + 0.04, rec
    rec = record(conn, 0, due)
    assert rec["outcome"] == "failed"
    assert [a["status"] for a in rec["attempts"]] == [500, 500, 500]


def test_next_attempt_at_shows_the_capped_backoff(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    """A retrying record's next_attempt_at is at most max_backoff_seconds after the attempt."""
    receiver.on("/cap", (500, 0))
    cfg = RetryConfig(backoff_seconds=100, max_backoff_seconds=120)
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/cap", retry=cfg)])
    before = time.time()
    deliver(conn, settings)
    rec = record(conn, 0, due)
    assert rec["outcome"] == "retrying"
    wait = parse(rec["next_attempt_at"]) - before
    assert 50 - 0.01 <= wait <= 100 + 1, wait  # retry 1: 100 s * [0.5, 1], under the cap


def test_the_backoff_is_capped_before_its_jitter() -> None:
    policy = RetryPolicy(max_retries=20, backoff_seconds=1.0, max_backoff_seconds=10.0)
    assert [policy.delay(n, 1.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(20, 0.0) == 5.0  # capped retries still spread over [0.5, 1] of the cap
    assert RetryPolicy(max_retries=3, backoff_seconds=1.0).delay(3, 1.0) == 4.0


def test_a_trigger_without_retry_fields_uses_the_worker_policy_itself(settings: Settings) -> None:
    defaults = RetryPolicy.from_settings(settings)
    assert defaults.max_backoff_seconds == settings.delivery_max_backoff_seconds == 3600
    assert defaults.of(None) is defaults
    assert defaults.of(Policy(overlap="skip", timeout_seconds=5)) is defaults  # nothing built per delivery
    merged = defaults.of(Policy(max_retries=0, final_statuses=StatusSet.parse([404])))
    assert (merged.max_retries, merged.backoff_seconds, merged.max_backoff_seconds) == (
        0,
        settings.delivery_backoff_seconds,
        3600,
    )
    assert merged.final_statuses == StatusSet.parse([404])


# -- Retry-After --------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_a_date_sets_the_next_attempt(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, retry_after_max_seconds=30)
    in_20s = format_datetime(datetime.fromtimestamp(time.time() + 20, UTC), usegmt=True)
    answers = {
        "/seconds": (429, 0, {"Retry-After": "7"}),
        "/date": (503, 0, {"Retry-After": in_20s}),
        "/capped": (429, 0, {"Retry-After": "100000"}),
        "/past": (503, 0, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        "/unreadable": (429, 0, {"Retry-After": "soon"}),
        "/not-429": (500, 0, {"Retry-After": "7"}),  # read on a 429 or 503 only
    }
    for path, answer in answers.items():
        receiver.on(path, answer)
    # No retry field: Retry-After applies to every trigger.
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + path) for path in answers])
    before = time.time()
    deliver(conn, settings)
    after = time.time()

    def waited(i: int) -> tuple[float | None, float, float]:
        rec = record(conn, i, due)
        assert rec["outcome"] == "retrying"
        (a,) = rec["attempts"]
        nxt = parse(rec["next_attempt_at"])
        return a.get("retry_after"), nxt - after, nxt - before

    honoured, low, high = waited(0)
    assert honoured == 7 and low <= 7 <= high + 0.001
    honoured, low, high = waited(1)
    assert honoured is not None and 18.5 <= honoured <= 20  # an HTTP-date has whole seconds
    assert low <= honoured <= high + 0.001
    honoured, low, high = waited(2)
    assert honoured == 30 and low <= 30 <= high + 0.001  # RETRY_AFTER_MAX_SECONDS
    for i in (3, 4, 5):  # a past date is 0 (the backoff applies); unreadable or not honoured: absent
        honoured, low, high = waited(i)
        assert honoured == (0 if i == 3 else None)
        assert low <= settings.delivery_backoff_seconds
        if i != 3:
            assert "retry_after" not in record(conn, i, due)["attempts"][0]


@pytest.mark.slow  # Retry-After is a whole second at least
def test_the_retry_waits_for_retry_after_when_longer_than_the_backoff(
    conn: Redis, settings: Settings, queue: Queue, receiver: Receiver
) -> None:
    receiver.on("/wait", (429, 0, {"Retry-After": "1"}))
    due = fire_now(conn, queue, settings, [make_trigger(receiver.url + "/wait")])
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due))
    reqs = receiver.to("/wait")
    assert attempts(reqs) == [1, 2]
    assert reqs[1].at - reqs[0].at >= 1.0  # the backoff alone is 0.05 s
    rec = record(conn, 0, due)
    assert rec["outcome"] == "delivered"
    assert [(a["status"], a.get("retry_after")) for a in rec["attempts"]] == [(429, 1), (200, None)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("-3", 0.0),
        ("99999999999999999999999", 3600.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),  # now = 60
        ("Thursday, 01-Jan-70 00:01:40 GMT", 40.0),  # RFC 850, obsolete but allowed
        ("Thu Jan  1 00:01:40 1970", 40.0),  # asctime: no zone, read as UTC
        ("Thu, 01 Jan 1970 00:00:30 GMT", 0.0),  # past
        ("Thu, 01 Jan 1970 01:00:00 +0000", 3540.0),
        ("Fri, 02 Jan 1970 00:00:00 GMT", 3600.0),  # capped
    ],
)
def test_retry_after_values(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, now=60.0, cap=3600.0) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "1.5", "+5", "5s", "Thu, 99 Foo 1970", "٣"])
def test_unreadable_retry_after_values_are_ignored(value: str | None) -> None:
    assert retry_after_seconds(value, now=60.0, cap=3600.0) is None


# -- final_statuses -----------------------------------------------------------------------------


def test_final_statuses_end_the_firing_after_one_attempt(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=1)
    receiver.on("/404", *[(404, 0)] * 3)
    receiver.on("/418", *[(418, 0)] * 3)
    receiver.on("/500", *[(500, 0)] * 3)
    url = receiver.url
    triggers = [
        make_trigger(url + "/404", final_statuses=[400, 404]),
        make_trigger(url + "/418", final_statuses=["4xx"]),
        make_trigger(url + "/500", final_statuses=[404, "4xx"]),  # not listed: retried
    ]
    due = fire_now(conn, queue, settings, triggers)
    drive(conn, queue, settings, lambda: conn.zcard(keys.failed(WS)) == 3)
    keep_driving(conn, queue, settings, 0.2)
    for i, status, n in ((0, 404, 1), (1, 418, 1), (2, 500, 2)):
        assert attempts(receiver.to(f"/{status}")) == list(range(1, n + 1))
        rec = record(conn, i, due)
        assert rec["outcome"] == "failed"
        assert [(a["status"], a["error"]) for a in rec["attempts"]] == [(status, None)] * n


# -- success ------------------------------------------------------------------------------------


def test_success_by_status_list_and_class(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=1)
    receiver.on("/204", (200, 0), (204, 0, {}, b""))
    receiver.on("/302", (302, 0, {"Location": "/elsewhere"}))
    receiver.on("/201", (201, 0))
    url = receiver.url
    triggers = [
        make_trigger(url + "/204", success=SuccessCheck(status=[204])),
        make_trigger(url + "/302", success=SuccessCheck(status=["2xx", 302])),
        make_trigger(url + "/201", success=SuccessCheck(status=["2xx", 302])),
    ]
    due = fire_now(conn, queue, settings, triggers)
    drive(conn, queue, settings, lambda: conn.zcard(keys.done(WS)) == 3)

    first, second = record(conn, 0, due)["attempts"]
    assert (first["status"], first["error"], first["message"]) == (200, "assertion", "expected status 204; got 200")
    assert first["body"] == '{"ok":true}'  # the excerpt is still recorded
    assert (second["status"], second["error"]) == (204, None)
    for i, status in ((1, 302), (2, 201)):
        rec = record(conn, i, due)
        assert rec["outcome"] == "delivered"
        assert [(a["status"], a["error"]) for a in rec["attempts"]] == [(status, None)]


def test_success_by_body_text(conn: Redis, redis_url: str, queue: Queue, receiver: Receiver) -> None:
    """body_contains is looked for past the excerpt (256 bytes), up to SUCCESS_BODY_MAX_BYTES; the
    excerpt stays 256 bytes and redacted; a mismatch is an `assertion` failure, retried."""
    settings = make_engine_settings(redis_url, delivery_max_retries=1, success_body_max_bytes=4096)
    secret = "Bearer sk-body-check-secret"
    padding = b"x" * 3000
    receiver.on(
        "/far",
        (200, 0, {}, secret.encode() + padding + b'"state":"ready"'),
    )
    receiver.on(
        "/too-far",
        (200, 0, {}, padding + padding + b'"state":"ready"'),  # beyond the first 4096 bytes
        (200, 0, {}, b'{"state":"ready"}'),
    )
    receiver.on("/500", (500, 0, {}, b'"state":"ready"'), (200, 0, {}, b'"state":"ready"'))
    url = receiver.url
    check = SuccessCheck(body_contains='"state":"ready"')
    triggers = [
        make_trigger(url + "/far", success=check, headers={"Authorization": secret}),
        make_trigger(url + "/too-far", success=check),
        make_trigger(url + "/500", success=check),
    ]
    due = fire_now(conn, queue, settings, triggers)
    drive(conn, queue, settings, lambda: conn.zcard(keys.done(WS)) == 3)

    (far,) = record(conn, 0, due)["attempts"]
    assert (far["status"], far["error"]) == (200, None)
    assert far["body"] == "[redacted]" + "x" * (256 - len(secret))
    missing, found = record(conn, 1, due)["attempts"]
    assert (missing["status"], missing["error"]) == (200, "assertion")
    assert missing["message"] == """the response did not contain '"state":"ready"' in its first 4096 bytes"""
    assert missing["body"] == "x" * 256
    assert (found["status"], found["error"]) == (200, None)
    # A non-2xx answer of a trigger without success.status is a plain failure, as without a policy.
    failed, ok = record(conn, 2, due)["attempts"]
    assert (failed["status"], failed["error"], failed["message"]) == (500, None, None)
    assert (ok["status"], ok["error"]) == (200, None)


def test_final_statuses_are_checked_after_the_success_check(
    conn: Redis, redis_url: str, queue: Queue, receiver: Receiver
) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=2)
    receiver.on("/404", *[(404, 0)] * 3)
    receiver.on("/410", *[(410, 0)] * 3)
    url = receiver.url
    triggers = [
        make_trigger(url + "/404", success=SuccessCheck(status=[200]), final_statuses=["4xx"]),
        make_trigger(url + "/410", success=SuccessCheck(status=[410]), final_statuses=["4xx"]),
    ]
    due = fire_now(conn, queue, settings, triggers)
    drive(conn, queue, settings, lambda: is_final(conn, "ws:0", due) and is_final(conn, "ws:1", due))
    rec = record(conn, 0, due)
    assert rec["outcome"] == "failed"
    assert [(a["status"], a["error"], a["message"]) for a in rec["attempts"]] == [
        (404, "assertion", "expected status 200; got 404")
    ]
    rec = record(conn, 1, due)  # success wins over final_statuses
    assert rec["outcome"] == "delivered"
    assert [(a["status"], a["error"]) for a in rec["attempts"]] == [(410, None)]


# -- the overlap rule's hold --------------------------------------------------------------------


@pytest.mark.parametrize("error", ["secrets", "blocked"])
def test_every_final_outcome_carries_the_firings_hold(error: str) -> None:
    """A firing held by its trigger's overlap rule lets go whatever ends it (a header that cannot
    be decrypted included); a retry stays held."""
    trigger = StoredTrigger(WS, "0", "v1", "* * * * * *", "http://x/", "GET", None, {})
    firing = Firing("ws:0@2027-01-15T08:00:01Z", "ws:0", "v1", 1_800_000_001.0, held=True)
    policy = RetryPolicy(max_retries=3, backoff_seconds=0.1)
    failed = Attempt(0.0, 0.0, error=error, message="x", final=True)
    outcome = classify(firing, trigger, failed, policy, now=1.0)
    assert outcome.kind in (OutcomeKind.FAILED, OutcomeKind.BLOCKED)
    assert outcome.held
    retrying = classify(firing, trigger, Attempt(0.0, 0.0, status=500), policy, now=1.0)
    assert retrying.kind is OutcomeKind.RETRYING
    assert retrying.held and retrying.retry is not None and retrying.retry.held
