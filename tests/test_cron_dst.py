"""The DST policy of `scheduler_api.cron` across the 2026 transitions (no Redis needed).

  * a cron whose hour field is `*` or a step runs in every real occurrence of a repeated hour;
  * a cron with a fixed hour (values, ranges) fires once there, at the first occurrence;
  * a local time in a spring-forward gap fires once, at the first instant after the jump.

2026 transitions:
  America/New_York  2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)   2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)
  Europe/Berlin     2026-03-29 02:00 CET -> 03:00 CEST (01:00Z)  2026-10-25 03:00 CEST -> 02:00 CET (01:00Z)
  Antarctica/Troll  2026-03-29 01:00 +00 -> 03:00 +02 (01:00Z)   2026-10-25 03:00 +02 -> 01:00 +00 (01:00Z)
"""

from __future__ import annotations

from datetime import datetime

import pytest

from scheduler_api import cron

NY = "America/New_York"
BERLIN = "Europe/Berlin"
TROLL = "Antarctica/Troll"


def z(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


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
    runs = parsed.next_runs(z(start), len(expected))
    assert [cron.iso(t) for t in runs] == expected
    # last_at_or_before agrees: each run is its own latest run, and a second before it is the previous.
    for before, run in zip([z(start), *runs], runs, strict=False):
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
    t0 = z(start)
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
