"""`scheduler_api.cron` against cron-parser 5.x, the parser of the original (BullMQ) service.

tests/data/cron_vectors.json is written by scripts/cron_vectors.js (run it with Node to regenerate):
cron-parser's own test-suite expressions and generated ones, in UTC and Asia/Tokyo (no DST), each
with a start instant and cron-parser's next five runs or its error. Every case cron-parser runs must
give the same five runs here, or be one of the documented refusals below (README, "Migrating from
the original (cron-parser)"), which `validate` refuses with a message saying why.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from scheduler_api import cron

VECTORS = Path(__file__).parent / "data" / "cron_vectors.json"

# Deliberate refusals of expressions cron-parser runs: (a fragment of our message, the reason).
REFUSALS = [
    ("hashed or random values", "H: cron-parser picks a random value on every parse without a seed"),
    ("must have 5 fields", "fewer than five fields: cron-parser pads them as seconds 0, minute *, ..."),
    ("is larger than the", "a step beyond its field's span fires once per cycle (*/61 minutes = hourly)"),
    ("never matches", "an expression that never fires"),
]

# What cron-parser refuses and we read (as croniter did, so stored definitions keep working):
# (a fragment of cron-parser's error, why we accept it).
WE_ACCEPT = [
    ("duplicate values", "a value listed twice (0,0 or 0,7 in day of week) is read once"),
    ("`#` and `,` special characters are incompatible", "a list of # items (croniter's 1#1,3#3)"),
    ("`#` and `-` special characters are incompatible", "a range of # days (croniter's MON-WED#2: each one's 2nd)"),
    ('cannot resolve alias "mid"', "@midnight, the Vixie and croniter name of @daily"),
]


def _load() -> list[dict[str, Any]]:
    doc = json.loads(VECTORS.read_text())
    assert doc["cron_parser"].startswith("5."), doc["cron_parser"]
    cases: list[dict[str, Any]] = doc["cases"]
    return cases


def _ours(case: dict[str, Any]) -> list[str] | str:
    """Our five runs, or the message of our refusal."""
    try:
        parsed = cron.validate(case["expr"], case["tz"])
    except cron.CronError as e:
        return str(e)
    start = datetime.fromisoformat(case["start"]).timestamp()
    return [cron.iso(t) for t in parsed.next_runs(start, 5)]


def test_every_case_cron_parser_runs_agrees_or_is_a_documented_refusal() -> None:
    counts: Counter[str] = Counter()
    disagreements = []
    for case in _load():
        runs = case.get("runs")
        if runs is None or len(runs) < 5:
            continue
        ours = _ours(case)
        if ours == runs:
            counts["agree"] += 1
            continue
        reason = next((why for fragment, why in REFUSALS if isinstance(ours, str) and fragment in ours), None)
        if reason is None:
            disagreements.append((case["expr"], case["tz"], case["start"], runs, ours))
        else:
            counts[reason] += 1
    assert not disagreements, "\n".join(map(repr, disagreements[:20]))
    assert counts["agree"] >= 1000, counts
    print(dict(counts))


def test_what_cron_parser_refuses_we_refuse_too_or_read_for_a_documented_reason() -> None:
    surprises = []
    for case in _load():
        runs = case.get("runs")
        if runs is not None and len(runs) == 5:
            continue
        ours = _ours(case)
        if isinstance(ours, str):
            continue  # refused by both
        assert runs is None, case  # cron-parser stopped part-way (its loop limit): we must not run it
        if not any(fragment in case["error"] for fragment, _ in WE_ACCEPT):
            surprises.append((case["expr"], case["error"], ours))
    assert not surprises, "\n".join(map(repr, surprises[:20]))


def test_the_file_covers_what_the_issue_asks_for() -> None:
    cases = _load()
    assert len(cases) >= 1000
    exprs = {c["expr"] for c in cases}
    assert {c["tz"] for c in cases} == {"UTC", "Asia/Tokyo"}
    assert {c["source"] for c in cases} == {"cron-parser test suite", "generated"}
    for needle in ("L", "#", "?", "@", "SUN", "JAN", "/", "-", ","):
        assert any(needle in e for e in exprs), needle
    assert any(len(e.split()) == 6 for e in exprs)
    assert any(e.split()[-1] in ("7", "0") for e in exprs if not e.startswith("@"))


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        # From the issue: cron-parser's own expectations.
        ("0 0 0 16,18 * 3#3", "2019-04-01T00:00:00Z", ["2019-04-16", "2019-04-17", "2019-04-18"]),
        ("0 0 * * 1/2", "2026-01-01T00:00:00Z", ["2026-01-02", "2026-01-04", "2026-01-05", "2026-01-07"]),
        ("0 0 * * 6/1", "2026-01-01T00:00:00Z", ["2026-01-03", "2026-01-04", "2026-01-10", "2026-01-11"]),
        ("0 0 * * 5-7", "2026-01-01T00:00:00Z", ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-09"]),
        ("0 0 0 8 * 5#3", "2026-01-01T00:00:00Z", ["2026-01-08", "2026-01-16", "2026-02-08", "2026-02-20"]),
        ("0 0 * * 5L", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-27"]),
        ("0 0 * * FRIL", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-27"]),
        ("0 0 * * L5", "2026-01-01T00:00:00Z", ["2026-01-30", "2026-02-27", "2026-03-27"]),  # croniter's spelling
        ("0 0 13 * 5L", "2026-01-01T00:00:00Z", ["2026-01-13", "2026-01-30", "2026-02-13", "2026-02-27"]),
        ("0 0 L * 1", "2026-01-01T00:00:00Z", ["2026-01-05", "2026-01-12", "2026-01-19", "2026-01-26"]),
        ("@weekdays", "2026-01-01T00:00:00Z", ["2026-01-02", "2026-01-05", "2026-01-06"]),
        ("@weekends", "2026-01-01T00:00:00Z", ["2026-01-03", "2026-01-04", "2026-01-10"]),
        ("0 0 * * FRI-SUN", "2026-01-01T00:00:00Z", ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-09"]),
    ],
)
def test_day_forms(expr: str, start: str, expected: list[str]) -> None:
    runs = cron.validate(expr).next_runs(datetime.fromisoformat(start).timestamp(), len(expected))
    assert [cron.iso(t)[:10] for t in runs] == expected


@pytest.mark.parametrize(
    ("expr", "start", "expected"),
    [
        ("@minutely", "2026-01-05T08:59:59Z", ["2026-01-05T09:00:00Z", "2026-01-05T09:01:00Z"]),
        ("@secondly", "2026-01-05T08:59:59Z", ["2026-01-05T09:00:00Z", "2026-01-05T09:00:01Z"]),
        ("? * * * *", "2026-01-05T08:59:59Z", ["2026-01-05T09:00:00Z", "2026-01-05T09:01:00Z"]),
        ("0 ? * * *", "2026-01-05T08:59:59Z", ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00Z"]),
        ("0/30 * * * * ?", "2026-01-05T08:59:59Z", ["2026-01-05T09:00:00Z", "2026-01-05T09:00:30Z"]),
    ],
)
def test_macros_and_question_marks(expr: str, start: str, expected: list[str]) -> None:
    runs = cron.validate(expr).next_runs(datetime.fromisoformat(start).timestamp(), len(expected))
    assert [cron.iso(t) for t in runs] == expected


# The N-N family: a range of one value is that value, in every field, with names and with steps
# (croniter reads low == high as the whole cycle: 0 9-9 * * * fired every hour).
N_N = [
    ("6-6 * * * * *", "6 * * * * *"),
    ("0 7-7 * * * *", "0 7 * * * *"),
    ("0 9-9 * * *", "0 9 * * *"),
    ("0 0 5-5 * *", "0 0 5 * *"),
    ("0 0 1 6-6 *", "0 0 1 6 *"),
    ("0 0 1 JUN-JUN *", "0 0 1 JUN *"),
    ("0 0 * * 1-1", "0 0 * * 1"),
    ("0 0 * * MON-MON", "0 0 * * MON"),
    ("0 0 * * SUN-SUN", "0 0 * * SUN"),
    ("0 0 * * 0-0", "0 0 * * 0"),
    ("0 0 * * 7-7", "0 0 * * 7"),
    ("0 3-3/2 * * *", "0 3 * * *"),
    ("5-5/10 * * * *", "5 * * * *"),
    ("0 0 10-10/3 * *", "0 0 10 * *"),
    ("0 0 * MAR-MAR/2 *", "0 0 * MAR *"),
    ("0 0 * * WED-WED/2", "0 0 * * WED"),
    ("*/10 2-2 * * *", "*/10 2 * * *"),
]


@pytest.mark.parametrize(("expr", "same_as"), N_N)
def test_a_range_of_one_value_is_that_value(expr: str, same_as: str) -> None:
    start = datetime.fromisoformat("2026-01-05T08:59:59Z").timestamp()
    ours = cron.validate(expr)
    assert ours.next_runs(start, 6) == cron.validate(same_as).next_runs(start, 6)
    assert ours.expr == same_as  # normalised, so descriptions read it right too
    assert "-" not in cron.describe(ours).split(",")[0] or "through" not in cron.describe(ours)


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("0 0 * * FRI-MON", "write 'FRI-SUN,MON' instead"),
        ("0 0 * * 5-1", "write '5-7,1' instead"),
        ("0 0 * * SAT-TUE", "write 'SAT-SUN,MON-TUE' instead"),
        ("0 0 1 NOV-FEB *", "write 'NOV-DEC,JAN-FEB' instead"),
        ("0 0 1 DEC-JAN *", "write 'DEC,JAN' instead"),
        ("50-10 * * * *", "write '50-59,0-10' instead"),
    ],
)
def test_backwards_ranges_are_refused_with_what_to_write(expr: str, fragment: str) -> None:
    with pytest.raises(cron.CronError) as e:
        cron.validate(expr)
    assert "runs backwards" in str(e.value) and fragment in str(e.value)
    cron.parse(expr)  # a stored definition is still read (wrapped, as croniter read it)
