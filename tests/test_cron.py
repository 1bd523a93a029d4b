"""`scheduler_api.cron`: parsing, next/previous run times, the DST policy and ISO formatting (no Redis).

DST policy: a local time in a spring-forward gap fires once, at the first instant after the jump; in
a repeated (fall-back) hour a cron whose hour field is `*` or a step runs in every real occurrence,
a cron with a fixed hour (values, ranges) once, at the first occurrence.

2026 transitions:
  America/New_York  2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)   2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
  Europe/Berlin     2026-03-29 02:00 CET -> 03:00 CEST (01:00Z)  2026-10-25 03:00 CEST -> 02:00 CET (01:00Z)
  Antarctica/Troll  2026-03-29 01:00 +00 -> 03:00 +02 (01:00Z)   2026-10-25 03:00 +02 -> 01:00 +00 (01:00Z)
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from scheduler_api import cron
from tests.support.clock import T, parse


def ts(*args: int) -> float:
    """Unix seconds of a UTC date-time: ts(2026, 1, 5, 9, 0, 0)."""
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


# 2026-01-05 is a Monday.
MONDAY_0859 = ts(2026, 1, 5, 8, 59, 59)


def test_five_fields_next_after() -> None:
    weekdays_at_9 = cron.parse("0 9 * * 1-5")
    assert weekdays_at_9.seconds_first is False
    assert weekdays_at_9.next_after(MONDAY_0859) == ts(2026, 1, 5, 9, 0, 0)
    # Strictly after: a run time itself gives the next one.
    assert weekdays_at_9.next_after(ts(2026, 1, 5, 9, 0, 0)) == ts(2026, 1, 6, 9, 0, 0)
    # Friday 09:00 is followed by Monday 09:00.
    assert weekdays_at_9.next_after(ts(2026, 1, 9, 9, 0, 0)) == ts(2026, 1, 12, 9, 0, 0)
    # Fractional seconds.
    assert weekdays_at_9.next_after(ts(2026, 1, 5, 9, 0, 0) + 0.5) == ts(2026, 1, 6, 9, 0, 0)


def test_five_fields_agrees_with_croniter() -> None:
    for expr in ("*/15 * * * *", "0 */2 * * *", "0 0 * * 0", "0 12 1 * *", "5 4 * * sun"):
        start = ts(2026, 3, 7, 13, 14, 15)
        expected = croniter(expr, start).get_next(float)
        assert cron.parse(expr).next_after(start) == expected, expr


def test_six_fields_are_seconds_first() -> None:
    every_10s = cron.parse("*/10 * * * * *")
    assert every_10s.seconds_first is True
    assert every_10s.next_after(ts(2026, 1, 5, 9, 0, 3)) == ts(2026, 1, 5, 9, 0, 10)
    assert every_10s.next_after(ts(2026, 1, 5, 9, 0, 50)) == ts(2026, 1, 5, 9, 1, 0)
    # Second 30 of minute 0 of hour 12: 12:00:30 every day (not minute 30 of hour 0 of day 12).
    noon_30s = cron.parse("30 0 12 * * *")
    assert noon_30s.next_after(MONDAY_0859) == ts(2026, 1, 5, 12, 0, 30)
    assert noon_30s.next_after(ts(2026, 1, 5, 12, 0, 30)) == ts(2026, 1, 6, 12, 0, 30)


def test_next_runs_lists_consecutive_times() -> None:
    assert cron.parse("*/20 * * * * *").next_runs(ts(2026, 1, 5, 9, 0, 0), 4) == [
        ts(2026, 1, 5, 9, 0, 20),
        ts(2026, 1, 5, 9, 0, 40),
        ts(2026, 1, 5, 9, 1, 0),
        ts(2026, 1, 5, 9, 1, 20),
    ]


def test_last_at_or_before() -> None:
    hourly = cron.parse("0 * * * *")
    # Exactly on a run time: that run time.
    assert hourly.last_at_or_before(ts(2026, 1, 5, 9, 0, 0)) == ts(2026, 1, 5, 9, 0, 0)
    # Fractional seconds after the run time: still that run time.
    assert hourly.last_at_or_before(ts(2026, 1, 5, 9, 0, 0) + 0.75) == ts(2026, 1, 5, 9, 0, 0)
    # Between run times: the previous one.
    assert hourly.last_at_or_before(ts(2026, 1, 5, 9, 59, 59)) == ts(2026, 1, 5, 9, 0, 0)
    assert hourly.last_at_or_before(ts(2026, 1, 5, 8, 59, 59)) == ts(2026, 1, 5, 8, 0, 0)
    every_10s = cron.parse("*/10 * * * * *")
    assert every_10s.last_at_or_before(ts(2026, 1, 5, 9, 0, 19)) == ts(2026, 1, 5, 9, 0, 10)
    assert every_10s.last_at_or_before(ts(2026, 1, 5, 9, 0, 20)) == ts(2026, 1, 5, 9, 0, 20)


@pytest.mark.parametrize(
    ("expr", "normalized", "expected_next"),
    [
        ("@hourly", "@hourly", ts(2026, 1, 5, 9, 0, 0)),
        ("@DAILY", "@daily", ts(2026, 1, 6, 0, 0, 0)),
        ("@midnight", "@midnight", ts(2026, 1, 6, 0, 0, 0)),
        ("@weekly", "@weekly", ts(2026, 1, 11, 0, 0, 0)),
        ("@monthly", "@monthly", ts(2026, 2, 1, 0, 0, 0)),
        ("@yearly", "@yearly", ts(2027, 1, 1, 0, 0, 0)),
        ("@annually", "@annually", ts(2027, 1, 1, 0, 0, 0)),
        ("  0   9 * * *  ", "0 9 * * *", ts(2026, 1, 5, 9, 0, 0)),
        ("0 9 * JAN MON", "0 9 * JAN MON", ts(2026, 1, 5, 9, 0, 0)),
        ("0 0 L * *", "0 0 L * *", ts(2026, 1, 31, 0, 0, 0)),
        ("0 0 * * 5#3", "0 0 * * 5#3", ts(2026, 1, 16, 0, 0, 0)),
        ("0 0 29 2 *", "0 0 29 2 *", ts(2028, 2, 29, 0, 0, 0)),
    ],
)
def test_accepted_forms(expr: str, normalized: str, expected_next: float) -> None:
    parsed = cron.parse(expr)
    assert parsed.expr == normalized
    assert parsed.next_after(MONDAY_0859) == expected_next


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 0 1 1 * 2030 1", "got 7"),
        ("* * * * * * *", "got 7"),
        ("* * * *", "got 4"),
        ("garbage", "5 fields"),
        ("", "empty"),
        ("   ", "empty"),
        ("H * * * *", "hashed or random"),
        ("h * * * *", "hashed or random"),
        ("H/5 * * * *", "hashed or random"),
        ("1,H * * * *", "hashed or random"),
        ("0 H(0-5) * * *", "hashed or random"),
        ("R * * * *", "hashed or random"),
        ("0 0 31 2 *", "never matches"),
        ("0 0 30,31 2 *", "never matches"),
        ("0 0 31 4,6,9,11 *", "never matches"),
        ("0 0 0 31 2 *", "never matches"),
        ("60 * * * *", "not a valid cron"),
        ("*/0 * * * *", "not a valid cron"),
        ("0 0 * 13 *", "not a valid cron"),
        ("0 0 * * 8", "not a valid cron"),
        ("a b c d e", "not a valid cron"),
        ("@every", "unknown macro"),
        ("@reboot", "unknown macro"),
    ],
)
def test_rejected_forms(expr: str, fragment: str) -> None:
    with pytest.raises(cron.CronError) as info:
        cron.parse(expr)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [123, None, 1.5])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(cron.CronError, match="must be a string"):
        cron.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("*/61 * * * *", "step 61 in '*/61' is larger than the minute field's 60 values"),  # would fire hourly
        ("0 0 1 */13 *", "larger than the month field's 12 values"),  # would fire yearly
        ("*/61 * * * * *", "the second field"),
        ("0 */25 * * *", "hour field"),
        ("*/999999999999999999999 * * * *", "larger than the minute"),
        ("0 0 * * 7-0", "range '7-0' in the day-of-week field runs backwards"),  # would fire daily
        ("30-10 * * * *", "runs backwards"),
        ("0 " + ",".join(["1"] * 200) + " * * *", "at most 256 characters"),
    ],
)
def test_rules_for_new_expressions(expr: str, fragment: str) -> None:
    """What the API refuses on top of `parse`: expressions that do not fire as they read."""
    with pytest.raises(cron.CronError) as e:
        cron.validate(expr)
    assert fragment in str(e.value)
    if len(expr) <= cron.MAX_CRON_LENGTH:
        cron.parse(expr)  # a definition stored before these rules is still read (and fires)


@pytest.mark.parametrize("expr", ["*/60 * * * *", "0 */24 * * *", "0-59/5 * * * *", "*/7 * * * 0-7", "0 9 * * MON-FRI"])
def test_steps_and_ranges_within_their_field_are_accepted(expr: str) -> None:
    assert cron.validate(expr) == cron.parse(expr)


def test_cron_error_is_a_value_error() -> None:
    # pydantic turns a ValueError raised in a validator into a 400 detail.
    assert issubclass(cron.CronError, ValueError)


def test_iso() -> None:
    assert cron.iso(ts(2026, 1, 5, 9, 0, 0)) == "2026-01-05T09:00:00Z"
    assert cron.iso(ts(2026, 1, 5, 9, 0, 0) + 0.25) == "2026-01-05T09:00:00.250Z"
    assert cron.iso(0) == "1970-01-01T00:00:00Z"
    # Round trip through datetime.fromisoformat.
    value = ts(2030, 12, 31, 23, 59, 59)
    assert datetime.fromisoformat(cron.iso(value)).timestamp() == value


def _days(expr: str, count: int) -> list[str]:
    runs = cron.validate(expr).next_runs(ts(2026, 1, 1, 0, 0, 0), count)
    return [cron.iso(t)[:10] for t in runs]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # croniter's W (from croniter 6.2): the weekday nearest the 15th (2026-02-15 and 03-15 are Sundays).
        ("0 0 15W * *", ["2026-01-15", "2026-02-16", "2026-03-16"]),
        ("0 0 1,15W * *", ["2026-01-15", "2026-02-01", "2026-02-16", "2026-03-01"]),  # a W in a list
        # Both day fields restricted: either matches, W, L and # forms included.
        ("0 0 15W * 1", ["2026-01-05", "2026-01-12", "2026-01-15", "2026-01-19"]),
        ("0 0 L * 5#3", ["2026-01-16", "2026-01-31", "2026-02-20", "2026-02-28"]),
        ("0 0 31 2 1", ["2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23", "2027-02-01"]),  # 31 Feb: no day
        # Day-of-week values mixed with L or # items.
        ("0 0 * * 1,5L", ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26", "2026-01-30"]),
        ("0 0 * * 3,1#1", ["2026-01-05", "2026-01-07", "2026-01-14", "2026-01-21"]),
        ("0 0 * * *#2", [f"2026-01-{d:02d}" for d in range(8, 15)] + ["2026-02-08"]),
    ],
)
def test_day_forms_croniter_computes_in_arms(expr: str, expected: list[str]) -> None:
    assert _days(expr, len(expected)) == expected


@pytest.mark.parametrize(
    ("expr", "same_as"),
    [("59/15 * * * *", "59 * * * *"), ("0 23/5 * * *", "0 23 * * *"), ("0 0 31/2 * *", "0 0 31 * *")],
)
def test_a_step_holding_one_value_is_that_value(expr: str, same_as: str) -> None:
    # croniter before 7.0 read a step from the field's last value as the whole cycle.
    assert cron.validate(expr).next_runs(MONDAY_0859, 4) == cron.validate(same_as).next_runs(MONDAY_0859, 4)


def test_a_stored_backwards_day_range_from_7_fires_as_croniter_read_it() -> None:
    # 7-0 is 0-0 to croniter, the whole week: refused for new input, a stored one keeps firing daily.
    with pytest.raises(cron.CronError, match="runs backwards"):
        cron.validate("0 0 * * 7-0")
    runs = cron.parse("0 0 * * 7-0").next_runs(ts(2026, 1, 1, 0, 0, 0), 3)
    assert runs == [ts(2026, 1, 2, 0, 0, 0), ts(2026, 1, 3, 0, 0, 0), ts(2026, 1, 4, 0, 0, 0)]


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


NY = "America/New_York"


BERLIN = "Europe/Berlin"


TROLL = "Antarctica/Troll"


def hm(*times: str, day: str) -> list[str]:
    return [f"{day}T{t}Z" if len(t) == 8 else f"{day}T{t}:00Z" for t in times]


CASES = [
    # --- fall back: wildcard and step hours run through the repeated hour -------------------------
    ("* * * * *", NY, "2026-11-01T05:57:00Z", hm("05:58", "05:59", "06:00", "06:01", "06:02", day="2026-11-01")),
    ("* * * * *", NY, "2026-11-01T06:58:00Z", hm("06:59", "07:00", "07:01", day="2026-11-01")),
    ("0 * * * *", NY, "2026-11-01T04:30:00Z", hm("05:00", "06:00", "07:00", "08:00", day="2026-11-01")),
    ("*/30 * * * *", NY, "2026-11-01T04:50:00Z", hm("05:00", "05:30", "06:00", "06:30", "07:00", day="2026-11-01")),
    ("0 */2 * * *", NY, "2026-11-01T03:30:00Z", hm("04:00", "07:00", "09:00", day="2026-11-01")),  # no 1 o'clock
    ("*/30 * * * * *", NY, "2026-11-01T05:59:00Z", hm("05:59:30", "06:00:00", "06:00:30", day="2026-11-01")),
    ("* * * * *", BERLIN, "2026-10-25T00:58:00Z", hm("00:59", "01:00", "01:01", day="2026-10-25")),
    ("0 * * * *", BERLIN, "2026-10-24T23:30:00Z", hm("00:00", "01:00", "02:00", "03:00", day="2026-10-25")),
    ("*/30 * * * *", BERLIN, "2026-10-24T23:50:00Z", hm("00:00", "00:30", "01:00", "01:30", "02:00", day="2026-10-25")),
    ("0 */2 * * *", BERLIN, "2026-10-24T23:30:00Z", hm("00:00", "01:00", "03:00", day="2026-10-25")),  # 02:00 twice
    (
        "0 * * * *",
        TROLL,
        "2026-10-24T22:30:00Z",
        ["2026-10-24T23:00:00Z", *hm("00:00", "01:00", "02:00", day="2026-10-25")],
    ),
    # --- fall back: a fixed hour fires once, at the first occurrence -------------------------------
    ("30 1 * * *", NY, "2026-10-31T12:00:00Z", ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]),
    ("0 0-23 * * *", NY, "2026-11-01T04:30:00Z", hm("05:00", "07:00", "08:00", day="2026-11-01")),  # a range is fixed
    ("0 1,*/6 * * *", NY, "2026-11-01T04:30:00Z", hm("05:00", "11:00", day="2026-11-01")),  # mixed: fixed
    (
        "*/20 1 * * *",
        NY,
        "2026-11-01T04:30:00Z",
        ["2026-11-01T05:00:00Z", "2026-11-01T05:20:00Z", "2026-11-01T05:40:00Z", "2026-11-02T06:00:00Z"],
    ),
    (
        "30 2 * * *",
        BERLIN,
        "2026-10-24T00:00:00Z",
        ["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    ),
    ("30 1 * * *", BERLIN, "2026-10-24T00:00:00Z", ["2026-10-24T23:30:00Z", "2026-10-26T00:30:00Z"]),
    # --- spring forward: gaps fire once right after the jump (as before) ---------------------------
    ("* * * * *", NY, "2026-03-08T06:58:00Z", hm("06:59", "07:00", "07:01", day="2026-03-08")),
    ("0 * * * *", NY, "2026-03-08T05:30:00Z", hm("06:00", "07:00", "08:00", day="2026-03-08")),
    ("*/30 * * * *", NY, "2026-03-08T06:00:00Z", hm("06:30", "07:00", "07:30", day="2026-03-08")),
    ("30 1 * * *", NY, "2026-03-07T12:00:00Z", ["2026-03-08T06:30:00Z", "2026-03-09T05:30:00Z"]),
    ("30 2 * * *", NY, "2026-03-07T12:00:00Z", ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]),
    ("* * * * *", BERLIN, "2026-03-29T00:58:00Z", hm("00:59", "01:00", "01:01", day="2026-03-29")),
    ("0 * * * *", BERLIN, "2026-03-28T23:30:00Z", hm("00:00", "01:00", "02:00", day="2026-03-29")),
    ("*/30 * * * *", BERLIN, "2026-03-29T00:00:00Z", hm("00:30", "01:00", "01:30", day="2026-03-29")),
    ("30 1 * * *", BERLIN, "2026-03-28T12:00:00Z", ["2026-03-29T00:30:00Z", "2026-03-29T23:30:00Z"]),
    ("30 2 * * *", BERLIN, "2026-03-28T12:00:00Z", ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]),
]


@pytest.mark.parametrize(("expr", "tz", "start", "expected"), CASES)
def test_runs_across_the_2026_transitions(expr: str, tz: str, start: str, expected: list[str]) -> None:
    parsed = cron.validate(expr, tz)
    runs = parsed.next_runs(parse(start), len(expected))
    assert [cron.iso(t) for t in runs] == expected
    # last_at_or_before agrees: each run is its own latest run, and a second before it is the previous.
    for before, run in zip([parse(start), *runs], runs, strict=False):
        assert parsed.last_at_or_before(run) == run
        assert parsed.last_at_or_before(run - 1) <= max(before, run - 1)
        assert parsed.next_after(parsed.last_at_or_before(run - 1)) == run


NIGHTS = [
    (NY, "2026-11-01T04:00:00Z"),
    (NY, "2026-03-08T05:00:00Z"),
    (BERLIN, "2026-10-24T23:00:00Z"),
    (BERLIN, "2026-03-29T00:00:00Z"),
    (TROLL, "2026-10-24T22:00:00Z"),
]


@pytest.mark.parametrize(
    "expr", ["* * * * *", "0 * * * *", "*/30 * * * *", "30 1 * * *", "30 2 * * *", "*/7 1-3 * * *", "0 */2 * * *"]
)
@pytest.mark.parametrize(("tz", "start"), NIGHTS)
def test_last_at_or_before_is_consistent_with_next_after(expr: str, tz: str, start: str) -> None:
    """For every 17th second of four hours around a transition: last_at_or_before(t) <= t <
    next_after(last_at_or_before(t)), and the runs found by stepping next_after are exactly the
    distinct values of last_at_or_before."""
    parsed = cron.parse(expr, tz)
    t0 = parse(start)
    stepped = set()
    t = parsed.last_at_or_before(t0)
    while t <= t0 + 4 * 3600:
        stepped.add(t)
        t = parsed.next_after(t)
    lasts = set()
    samples = [t0 + k for k in range(0, 4 * 3600, 17)]
    for t in samples:
        last = parsed.last_at_or_before(t)
        assert last <= t < parsed.next_after(last), (cron.iso(t), cron.iso(last))
        lasts.add(last)
    assert lasts == {x for x in stepped if x <= samples[-1]}


def isos(values: list[float]) -> list[str]:
    return [cron.iso(v) for v in values]


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
    runs = parsed.next_runs(parse(start), len(expected))
    assert isos(runs) == expected
    assert len(set(runs)) == len(runs)  # never the same instant twice
    # next_after is strictly after: starting from a run time gives the following one.
    for a, b in zip(runs, runs[1:], strict=False):
        assert parsed.next_after(a) == b
        assert parsed.next_after(a - 0.5) == a


def test_utc_is_the_default_and_named_utc_is_the_same() -> None:
    assert cron.parse("30 1 * * *").tz == "UTC"
    start = parse("2026-11-01T00:00:00Z")
    assert cron.parse("30 1 * * *").next_runs(start, 3) == cron.parse("30 1 * * *", "UTC").next_runs(start, 3)
    assert isos(cron.parse("30 1 * * *").next_runs(start, 2)) == ["2026-11-01T01:30:00Z", "2026-11-02T01:30:00Z"]


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "america/new_york_x", "UTC+5", "../etc/passwd", "x" * 70])
def test_unknown_time_zone_is_rejected(bad: str) -> None:
    with pytest.raises(cron.CronError, match="time zone"):
        cron.parse("0 0 * * *", bad)


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
    last = parsed.last_at_or_before(parse(at))
    assert cron.iso(last) == expected
    # Consistent with next_after: the latest run time at or before `at` is followed by one after it.
    assert parsed.next_after(last) > parse(at)


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
        t0 = parse(start)
        for minute in range(0, 4 * 60):
            t = t0 + minute * 60 + 17
            last = parsed.last_at_or_before(t)
            assert last <= t, (expr, tz, cron.iso(t))
            assert parsed.next_after(last) > t, (expr, tz, cron.iso(t), cron.iso(last))
