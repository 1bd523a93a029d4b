"""Hypothesis over the cron grammar: whatever `validate` accepts can be described (never an
exception, so the preview and the one-trigger view never answer 500) and run, in UTC and across
DST, with `last_at_or_before` consistent with `next_after`."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_api import cron
from tests.support.cron_grammar import expressions

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
