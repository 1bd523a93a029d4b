"""`scheduler_api.storage.series`: per-minute outcome counts written by the record and commit
scripts as firings are delivered, missed and skipped, the lateness histogram and its quantiles,
and the bounds (every key expires)."""

from __future__ import annotations

import time

import pytest
from redis import Redis
from rq import Queue

from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import edits, keys, series
from scheduler_api.triggers import Trigger
from tests.support.clock import EVERY_SECOND, ONCE, T
from tests.support.engine import fire_ok_and_bad_once
from tests.support.factories import WS, make_engine_settings
from tests.support.receiver import Receiver


def totals(minutes: list[series.Minute]) -> dict[str, int]:
    out = dict.fromkeys(series.OUTCOMES, 0)
    for m in minutes:
        for kind, c in m.counts.items():
            out[kind] += c
    return out


def test_a_real_delivery_is_counted_in_its_minute(redis_url: str, conn: Redis, receiver: Receiver) -> None:
    settings = make_engine_settings(redis_url, delivery_max_retries=1)
    fire_ok_and_bad_once(conn, settings, WS, receiver)  # one delivered; one failed attempt, retried later
    minutes = series.read(conn, now=time.time(), minutes=5)
    assert totals(minutes) == {**dict.fromkeys(series.OUTCOMES, 0), "delivered": 1, "retrying": 1}
    assert len(minutes) == 5 and minutes[-1].start == series.minute_start(time.time())
    assert [b.start - a.start for a, b in zip(minutes, minutes[1:], strict=False)] == [60.0] * 4
    for key in conn.keys("sa:series:*") + conn.keys("sa:wsday:*"):
        assert 0 < conn.ttl(key) <= max(series.SERIES_TTL, series.WORKSPACE_DAY_TTL)
    assert conn.ttl(series.record_keys(time.time())[0]) > 86_000


def test_missed_and_skipped_firings_are_counted_when_the_scheduler_commits_them(
    conn: Redis, settings: Settings, queue: Queue
) -> None:
    edits.replace(conn, "late", [Trigger(cron=ONCE, url="https://example.com/x", method="GET")], now=lambda: T)
    ticking.tick(conn, queue, settings, now=T + 1 + 120)  # past MISFIRE_GRACE_SECONDS (60): missed
    skip = Trigger.model_validate(
        {"cron": EVERY_SECOND, "url": "https://example.com/y", "method": "GET", "overlap": "skip"}
    )
    edits.replace(conn, "busy", [skip], now=lambda: T + 200)
    ticking.tick(conn, queue, settings, now=T + 201.1)  # sent, and active until its outcome
    ticking.tick(conn, queue, settings, now=T + 202.1)  # skipped: the first is still active
    counted = totals(series.read(conn, now=T + 240, minutes=3))
    assert (counted["missed"], counted["skipped"]) == (1, 1)
    assert conn.ttl(keys.series_minute(series.minute_start(T + 202.1))) > 86_000


def test_every_minute_of_the_window_is_returned_oldest_first(conn: Redis) -> None:
    now = T + 30
    minutes = series.read(conn, now=now)
    assert len(minutes) == 60 and minutes[0].start == T - 59 * 60 and minutes[-1].start == T
    assert all(m.counts == dict.fromkeys(series.OUTCOMES, 0) for m in minutes)
    assert all(m.lateness_p50 is None and m.lateness_p99 is None for m in minutes)
    for bad in (0, 1441):
        with pytest.raises(ValueError, match=f"minutes must be between 1 and 1440, got {bad}"):
            series.read(conn, now=now, minutes=bad)


def test_lateness_quantiles_per_minute(conn: Redis) -> None:
    pipe = conn.pipeline()
    series.observe_lateness(pipe, [0.05] * 50 + [0.2] * 49 + [400.0], now=T + 1)
    series.observe_lateness(pipe, [4.0], now=T + 61)
    series.observe_lateness(pipe, [], now=T + 121)
    pipe.execute()
    first, second, third = series.read(conn, now=T + 121, minutes=3)
    # Ranks 50 and 99 of 100: the top of the first bucket (0-0.1 s) and of the second (0.1-0.25 s).
    assert first.lateness_p50 == pytest.approx(0.1) and first.lateness_p99 == pytest.approx(0.25)
    assert second.lateness_p50 == pytest.approx(4.0) and second.lateness_p99 == pytest.approx(4.98)
    assert third.lateness_p50 is None
    assert series.quantile({"+Inf": 3}, 0.5) == series.LATENESS_BUCKETS[-1]
    assert 0 < conn.ttl(keys.series_minute(series.minute_start(T + 1))) <= series.SERIES_TTL


def test_the_metrics_histogram_and_the_series_share_their_buckets() -> None:
    from scheduler_api import metrics

    assert metrics.HISTOGRAMS["lateness_seconds"][0] == series.LATENESS_BUCKETS
