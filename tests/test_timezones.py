"""Time zones and the DST policy (issue #7), through `cron.parse` and through the real scheduler tick.

Policy: a local time that does not exist (spring forward) fires once, at the first instant after
the gap; a local time that happens twice (fall back) fires in every occurrence when the cron's hour
field is `*` or a step (`* * * * *`, `0 * * * *`, `*/15 * * * *`), once at its first occurrence when
the hour is fixed (`30 1 * * *`). tests/test_cron_dst.py has more cases.

2026 transitions used:
  America/New_York  2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)   2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
  Europe/Berlin     2026-03-29 02:00 CET -> 03:00 CEST (01:00Z)  2026-10-25 03:00 CEST -> 02:00 CET (01:00Z)
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from conftest import Received, Receiver, make_settings
from croniter import croniter
from redis import Redis
from rq import Queue

from scheduler_api import cron
from scheduler_api.delivery import worker
from scheduler_api.engine import tick as ticking
from scheduler_api.settings import Settings
from scheduler_api.storage import firings, keys
from scheduler_api.storage import triggers as store
from scheduler_api.triggers import Trigger

NY = "America/New_York"
BERLIN = "Europe/Berlin"


def z(text: str) -> float:
    """Unix seconds of an ISO UTC time written with a Z."""
    return datetime.fromisoformat(text).timestamp()


def isos(values: list[float]) -> list[str]:
    return [cron.iso(v) for v in values]


def scheduled_at(r: Received) -> str:
    return {k.lower(): v for k, v in r.headers.items()}["x-scheduler-scheduled-at"]


pytestmark = pytest.mark.usefixtures("no_rq_command_channel")  # conftest


# --- cron.parse(...).next_runs -------------------------------------------------------------------


def test_croniter_alone_fires_the_repeated_time_twice_ours_once() -> None:
    """The reason for the policy: croniter on an aware datetime gives 01:30 EDT *and* 01:30 EST."""
    start = datetime(2026, 10, 31, 12, 0, tzinfo=ZoneInfo(NY))
    it = croniter("30 1 * * *", start)
    raw = [it.get_next(datetime).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for _ in range(3)]
    assert raw[:2] == ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"]  # twice on the same night

    ours = isos(cron.parse("30 1 * * *", NY).next_runs(start.timestamp(), 3))
    assert ours == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"]
    assert "2026-11-01T06:30:00Z" not in ours


@pytest.mark.parametrize(
    ("expr", "tz", "start", "expected"),
    [
        # New York, spring forward: 02:30 does not exist on 2026-03-08 -> 03:00 EDT = 07:00Z, once.
        (
            "30 2 * * *",
            NY,
            "2026-03-07T00:00:00Z",
            ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"],
        ),
        # New York, fall back: 01:30 happens twice on 2026-11-01 -> its first occurrence (EDT), once.
        (
            "30 1 * * *",
            NY,
            "2026-10-31T00:00:00Z",
            ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"],
        ),
        # Berlin, spring forward: 02:30 does not exist on 2026-03-29 -> 03:00 CEST = 01:00Z.
        (
            "30 2 * * *",
            BERLIN,
            "2026-03-28T00:00:00Z",
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
        ),
        # Berlin, fall back: 02:30 happens twice on 2026-10-25 -> 02:30 CEST = 00:30Z, not 01:30Z.
        (
            "30 2 * * *",
            BERLIN,
            "2026-10-24T00:00:00Z",
            ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"],
        ),
        # Several gap times (02:00, 02:20, 02:40) collapse onto one instant and fire once.
        (
            "*/20 2 * * *",
            NY,
            "2026-03-08T00:00:00Z",
            ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:20:00Z", "2026-03-09T06:40:00Z"],
        ),
        # Hourly across the fall back: the hour field is *, so the repeated 01:00 fires in both
        # occurrences (01:00 EDT = 05:00Z and 01:00 EST = 06:00Z), then 02:00 EST.
        (
            "0 * * * *",
            NY,
            "2026-11-01T04:30:00Z",
            ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z", "2026-11-01T08:00:00Z"],
        ),
        # Hourly across the spring forward: 02:00 EST does not exist -> 03:00 EDT = 07:00Z, once.
        (
            "0 * * * *",
            NY,
            "2026-03-08T05:30:00Z",
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z", "2026-03-08T09:00:00Z"],
        ),
        # Seconds-first crons too: the gap's 02:00:00..02:59:30 all collapse onto 07:00:00Z.
        (
            "*/30 * * * * *",
            NY,
            "2026-03-08T06:59:00Z",
            ["2026-03-08T06:59:30Z", "2026-03-08T07:00:00Z", "2026-03-08T07:00:30Z", "2026-03-08T07:01:00Z"],
        ),
    ],
)
def test_next_runs_follow_the_dst_policy(expr: str, tz: str, start: str, expected: list[str]) -> None:
    parsed = cron.parse(expr, tz)
    runs = parsed.next_runs(z(start), len(expected))
    assert isos(runs) == expected
    assert len(set(runs)) == len(runs)  # never the same instant twice
    # next_after is strictly after: starting from a run time gives the following one.
    for a, b in zip(runs, runs[1:], strict=False):
        assert parsed.next_after(a) == b
        assert parsed.next_after(a - 0.5) == a


def test_utc_is_the_default_and_named_utc_is_the_same() -> None:
    assert cron.parse("30 1 * * *").tz == "UTC"
    start = z("2026-11-01T00:00:00Z")
    assert cron.parse("30 1 * * *").next_runs(start, 3) == cron.parse("30 1 * * *", "UTC").next_runs(start, 3)
    assert isos(cron.parse("30 1 * * *").next_runs(start, 2)) == ["2026-11-01T01:30:00Z", "2026-11-02T01:30:00Z"]


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "america/new_york_x", "UTC+5", "../etc/passwd", "x" * 70])
def test_unknown_time_zone_is_rejected(bad: str) -> None:
    with pytest.raises(cron.CronError, match="time zone"):
        cron.parse("0 0 * * *", bad)


# --- last_at_or_before (the misfire path) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "at", "expected"),
    [
        # Fall back, New York. A fixed hour's wall times count at their first occurrence, so during
        # the second 01:xx (06:00Z-07:00Z) its latest run time is in the first one; a wildcard or
        # step hour runs in the second 01:xx too.
        ("30 1 * * *", NY, "2026-11-01T05:29:59Z", "2026-10-31T05:30:00Z"),
        ("30 1 * * *", NY, "2026-11-01T05:30:00Z", "2026-11-01T05:30:00Z"),
        ("30 1 * * *", NY, "2026-11-01T06:30:00Z", "2026-11-01T05:30:00Z"),
        ("30 1 * * *", NY, "2026-11-01T06:45:00Z", "2026-11-01T05:30:00Z"),
        ("30 1 * * *", NY, "2026-11-02T06:29:59Z", "2026-11-01T05:30:00Z"),
        ("* * * * *", NY, "2026-11-01T05:59:30Z", "2026-11-01T05:59:00Z"),
        ("* * * * *", NY, "2026-11-01T06:00:30Z", "2026-11-01T06:00:00Z"),
        ("* * * * *", NY, "2026-11-01T06:40:00Z", "2026-11-01T06:40:00Z"),
        ("* * * * *", NY, "2026-11-01T07:00:30Z", "2026-11-01T07:00:00Z"),
        ("*/15 * * * *", NY, "2026-11-01T06:20:00Z", "2026-11-01T06:15:00Z"),
        ("0 * * * *", NY, "2026-11-01T06:59:59Z", "2026-11-01T06:00:00Z"),
        ("0 1-3 * * *", NY, "2026-11-01T06:59:59Z", "2026-11-01T05:00:00Z"),
        # Spring forward, New York: the gap time maps to 07:00Z.
        ("30 2 * * *", NY, "2026-03-08T06:59:59Z", "2026-03-07T07:30:00Z"),
        ("30 2 * * *", NY, "2026-03-08T07:00:00Z", "2026-03-08T07:00:00Z"),
        ("30 2 * * *", NY, "2026-03-08T08:00:00Z", "2026-03-08T07:00:00Z"),
        # Berlin.
        ("30 2 * * *", BERLIN, "2026-03-29T01:00:00Z", "2026-03-29T01:00:00Z"),
        ("30 2 * * *", BERLIN, "2026-03-29T00:59:59Z", "2026-03-28T01:30:00Z"),
        ("30 2 * * *", BERLIN, "2026-10-25T01:30:00Z", "2026-10-25T00:30:00Z"),
        ("30 2 * * *", BERLIN, "2026-10-25T01:45:00Z", "2026-10-25T00:30:00Z"),
        ("*/10 * * * *", BERLIN, "2026-10-25T01:25:00Z", "2026-10-25T01:20:00Z"),
        ("*/10 2 * * *", BERLIN, "2026-10-25T01:25:00Z", "2026-10-25T00:50:00Z"),
    ],
)
def test_last_at_or_before_across_transitions(expr: str, tz: str, at: str, expected: str) -> None:
    parsed = cron.parse(expr, tz)
    last = parsed.last_at_or_before(z(at))
    assert cron.iso(last) == expected
    # Consistent with next_after: the latest run time at or before `at` is followed by one after it.
    assert parsed.next_after(last) > z(at)


def test_last_at_or_before_agrees_with_next_after_every_minute_of_both_nights() -> None:
    """For each minute of the transition nights: last_at_or_before(t) is a run time <= t and the
    next run time after it is > t (so there is no run time in between)."""
    cases = [
        ("*/7 * * * *", NY, "2026-03-08T05:00:00Z"),
        ("*/7 * * * *", NY, "2026-11-01T04:00:00Z"),
        ("*/7 * * * *", BERLIN, "2026-03-29T00:00:00Z"),
        ("*/7 * * * *", BERLIN, "2026-10-24T23:30:00Z"),
        ("30 1,2 * * *", NY, "2026-11-01T04:00:00Z"),
        ("30 2,3 * * *", BERLIN, "2026-10-24T23:30:00Z"),
    ]
    for expr, tz, start in cases:
        parsed = cron.parse(expr, tz)
        t0 = z(start)
        for minute in range(0, 4 * 60):
            t = t0 + minute * 60 + 17
            last = parsed.last_at_or_before(t)
            assert last <= t, (expr, tz, cron.iso(t))
            assert parsed.next_after(last) > t, (expr, tz, cron.iso(t), cron.iso(last))


def test_misfire_across_the_fall_back_fires_the_latest_time_and_moves_forward(
    conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    """A scheduler that was away from 05:58Z to 06:00:30Z on 2026-11-01 (New York, every minute):
    the latest run time is 01:00 EST = 06:00Z (the hour field is *, so the repeated hour runs; 30 s
    late, within grace); it fires once and the next run is 01:01 EST = 06:01Z. It must not go back
    to 01:00 EDT (05:00Z)."""
    settings = make_settings(redis_url, misfire_grace_seconds=120)
    queue = Queue(settings.queue_name, connection=conn)
    store.replace(
        conn,
        "tz",
        [Trigger(cron="* * * * *", url=receiver.url + "/m", method="GET", timezone=NY)],
        now=lambda: z("2026-11-01T05:57:30Z"),
    )
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T05:58:00Z"
    result = ticking.tick(conn, queue, settings, now=z("2026-11-01T06:00:30Z"))
    assert (result.fired, result.missed) == (1, 0)
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T06:01:00Z"
    again = ticking.tick(conn, queue, settings, now=z("2026-11-01T06:00:59Z"))
    assert (again.fired, again.missed) == (0, 0)
    again = ticking.tick(conn, queue, settings, now=z("2026-11-01T06:01:00Z"))
    assert (again.fired, again.missed) == (1, 0)
    worker.run_worker(settings, conn, burst=True)
    assert sorted(scheduled_at(r) for r in receiver.to("/m")) == ["2026-11-01T06:00:00Z", "2026-11-01T06:01:00Z"]


def test_misfire_beyond_grace_during_the_repeated_hour_is_missed_once(conn: Redis, redis_url: str) -> None:
    settings = make_settings(redis_url, misfire_grace_seconds=30)
    queue = Queue(settings.queue_name, connection=conn)
    store.replace(
        conn,
        "tz",
        [Trigger(cron="*/15 * * * *", url="http://127.0.0.1:9/x", method="GET", timezone=NY)],
        now=lambda: z("2026-11-01T05:10:00Z"),
    )  # next: 05:15Z; the scheduler comes back at 06:20Z (01:20 EST)
    result = ticking.tick(conn, queue, settings, now=z("2026-11-01T06:20:00Z"))
    assert (result.fired, result.missed) == (0, 1)
    # The latest run time is 01:15 EST (the hour field is *, so the repeated hour runs).
    rec = firings.get_record(conn, "tz:0@2026-11-01T06:15:00Z")
    assert rec is not None and rec["outcome"] == "missed"
    assert cron.iso(conn.zscore(keys.SCHEDULE, "tz:0") or 0) == "2026-11-01T06:30:00Z"
    # Later ticks before the next run time neither miss it again nor fire anything.
    for minute in range(21, 30):
        again = ticking.tick(conn, queue, settings, now=z(f"2026-11-01T06:{minute:02d}:00Z"))
        assert (again.fired, again.missed) == (0, 0), minute
    assert int(conn.hget(keys.METRICS, "missed") or 0) == 1


# --- through the real scheduler tick, minute by minute ---------------------------------------------

NIGHTS = {
    "ny-spring": (
        NY,
        "2026-03-08T03:00:00Z",
        "2026-03-08T10:00:00Z",
        {
            "30 2 * * *": ["2026-03-08T07:00:00Z"],
            "0 2 * * *": ["2026-03-08T07:00:00Z"],
            "*/20 2 * * *": ["2026-03-08T07:00:00Z"],
            "30 1 * * *": ["2026-03-08T06:30:00Z"],
            "30 3 * * *": ["2026-03-08T07:30:00Z"],
            "0 * * * *": [f"2026-03-08T{h:02d}:00:00Z" for h in range(4, 11)],
        },
    ),
    "ny-fall": (
        NY,
        "2026-11-01T03:00:00Z",
        "2026-11-01T10:00:00Z",
        {
            "30 1 * * *": ["2026-11-01T05:30:00Z"],
            "0 1 * * *": ["2026-11-01T05:00:00Z"],
            "30 2 * * *": ["2026-11-01T07:30:00Z"],
            # the hour field is *: the repeated 01:00 fires in both occurrences (05:00Z, 06:00Z)
            "0 * * * *": [f"2026-11-01T{h:02d}:00:00Z" for h in range(4, 11)],
        },
    ),
    "berlin-spring": (
        BERLIN,
        "2026-03-28T22:00:00Z",
        "2026-03-29T04:00:00Z",
        {
            "30 2 * * *": ["2026-03-29T01:00:00Z"],
            "0 2 * * *": ["2026-03-29T01:00:00Z"],
            "30 3 * * *": ["2026-03-29T01:30:00Z"],
            "30 1 * * *": ["2026-03-29T00:30:00Z"],
        },
    ),
    "berlin-fall": (
        BERLIN,
        "2026-10-24T22:00:00Z",
        "2026-10-25T04:00:00Z",
        {
            "30 2 * * *": ["2026-10-25T00:30:00Z"],
            "0 2 * * *": ["2026-10-25T00:00:00Z"],
            "30 3 * * *": ["2026-10-25T02:30:00Z"],
            "30 1 * * *": ["2026-10-24T23:30:00Z"],
        },
    ),
}


def _batched_firings(conn: Redis) -> list[firings.Firing]:
    out = []
    for key in conn.scan_iter(keys.BATCH_PREFIX + "*"):
        out += [firings.Firing.from_json(raw) for raw in conn.hvals(key)]
    return out


@pytest.mark.parametrize("night", sorted(NIGHTS))
def test_scheduler_tick_every_minute_across_the_transition_night(
    night: str, conn: Redis, redis_url: str, receiver: Receiver
) -> None:
    tz, start, end, crons = NIGHTS[night]
    settings: Settings = make_settings(redis_url, worker_concurrency=5)
    queue = Queue(settings.queue_name, connection=conn)
    exprs = list(crons)
    triggers = [Trigger(cron=e, url=f"{receiver.url}/{i}", method="POST", timezone=tz) for i, e in enumerate(exprs)]
    store.replace(conn, "tz", triggers, now=lambda: z(start))

    now = z(start)
    while now <= z(end):
        result = ticking.tick(conn, queue, settings, now=now)
        assert result.missed == 0
        now += 60

    got: dict[str, list[str]] = {e: [] for e in exprs}
    for f in _batched_firings(conn):
        got[exprs[int(keys.split_job_id(f.job_id)[1])]].append(cron.iso(f.scheduled_at))
    assert {e: sorted(v) for e, v in got.items()} == crons

    worker.run_worker(settings, conn, burst=True)
    delivered: Counter[tuple[str, str]] = Counter()
    for r in receiver.requests:
        delivered[(r.path, scheduled_at(r))] += 1
    expected = Counter({(f"/{i}", when): 1 for i, e in enumerate(exprs) for when in crons[e]})
    assert delivered == expected  # each expected time exactly once, nothing else
