"""`scheduler_api.cron`: parsing, next/previous run times and ISO formatting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from croniter import croniter

from scheduler_api import cron


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
