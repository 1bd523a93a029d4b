"""Hypothesis over the cron grammar: whatever `validate` accepts can be described (never an
exception, so the preview and the one-trigger view never answer 500) and run, in UTC and across
DST, with `last_at_or_before` consistent with `next_after`."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_api import cron, cron_syntax

MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
DAYS = "SUN MON TUE WED THU FRI SAT".split()
SPAN = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


@st.composite
def value(draw: st.DrawFn, field: str) -> str:
    low, high = SPAN[field]
    v = draw(st.integers(low, high + 1) if draw(st.integers(0, 19)) == 0 else st.integers(low, high))
    if field == "month" and 1 <= v <= 12 and draw(st.booleans()):
        return MONTHS[v - 1]
    if field == "dow" and v < 7 and draw(st.booleans()):
        return DAYS[v]
    return str(v)


@st.composite
def item(draw: st.DrawFn, field: str) -> str:
    kind = draw(st.sampled_from(["value", "range", "star-step", "value-step", "range-step", "star"] * 3 + ["special"]))
    step = str(draw(st.integers(0, 70) if draw(st.integers(0, 9)) == 0 else st.integers(1, 12)))
    if kind == "value":
        return draw(value(field))
    if kind == "range":
        return f"{draw(value(field))}-{draw(value(field))}"
    if kind == "star-step":
        return f"{draw(st.sampled_from(['*', '?']))}/{step}"
    if kind == "value-step":
        return f"{draw(value(field))}/{step}"
    if kind == "range-step":
        return f"{draw(value(field))}-{draw(value(field))}/{step}"
    if kind == "star":
        return draw(st.sampled_from(["*", "?"]))
    if field == "dom":
        return draw(st.sampled_from(["L", f"{draw(value(field))}W", "LW", "L-2"]))
    if field == "dow":
        return draw(
            st.sampled_from(
                [
                    f"{draw(value(field))}L",
                    f"L{draw(value(field))}",
                    f"{draw(value(field))}#{draw(st.integers(0, 6))}",
                    "L",
                ]
            )
        )
    return draw(st.sampled_from(["H", "*/", "-", ""]))


@st.composite
def field_text(draw: st.DrawFn, field: str) -> str:
    if draw(st.integers(0, 2)) == 0:
        return "*"
    return ",".join(draw(st.lists(item(field), min_size=1, max_size=2)))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from(sorted(cron_syntax.MACROS) + ["@reboot", "@DAILY"]))
    names = ["minute", "hour", "dom", "month", "dow"]
    if draw(st.booleans()):
        names = ["second", *names]
    return " ".join(draw(field_text(n)) for n in names)


START = datetime.fromisoformat("2026-10-31T22:00:00Z").timestamp()  # before both fall-backs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=expressions(), tz=st.sampled_from(["UTC", "America/New_York", "Asia/Tokyo"]))
def test_what_validate_accepts_is_described_and_runs(expr: str, tz: str) -> None:
    try:
        parsed = cron.validate(expr, tz)
    except cron.CronError as e:
        assert str(e)
        return
    text = cron.describe(parsed)
    assert isinstance(text, str) and text.strip()
    assert cron.parse(parsed.expr, tz) == parsed  # the normalised form reads the same
    runs = parsed.next_runs(START, 4)
    assert runs == sorted(set(runs)) and runs[0] > START
    for run in runs:
        assert parsed.last_at_or_before(run) == run
        assert parsed.next_after(parsed.last_at_or_before(run - 0.5)) == run


@pytest.mark.parametrize(
    "expr", ["0 20/2,23 * * *", "0 1,20/2 * * *", "0 0 * * *#2", "0 0 * * 1#1,3#3", "0 0 25-L * *", "@weekends"]
)
def test_describe_never_raises(expr: str) -> None:
    text = cron.describe(cron.parse(expr))
    assert text.strip()
    assert cron.describe(cron.parse(expr, "Europe/Paris")).endswith(" (Europe/Paris)")


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 9-9 * * *", "At 09:00"),
        ("0 0 * * 1/2", "Sunday, Monday, Wednesday, and Friday"),
        ("0 0 * * 5L", "last Friday"),
        ("0 0 * * L5", "last Friday"),
        ("? * * * *", "Every minute"),
        ("@minutely", "Every minute"),
        ("@secondly", "Every second"),
        ("@weekdays", "Monday through Friday"),
    ],
)
def test_describe_reads_the_normalised_expression(expr: str, fragment: str) -> None:
    assert fragment in cron.describe(cron.parse(expr))
