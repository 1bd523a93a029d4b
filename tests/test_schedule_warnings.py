"""`scheduler_api.schedule_warnings`: the dry-run / write warnings of a schedule (no Redis needed).

Transitions the cases meet:
  America/New_York     2026-11-01 02:00 EDT -> 01:00 EST (06:00Z)    2027-03-14 02:00 EST -> 03:00 EDT (07:00Z)
  Australia/Lord_Howe  2026-10-04 02:00 -> 02:30 (+11)               2027-04-04 02:00 -> 01:30 (+10:30)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler_api import cron
from scheduler_api.schedule_warnings import MAX_RUNS, DeliveryPolicy, schedule_warnings
from scheduler_api.settings import Settings
from scheduler_api.triggers import RetryConfig, Trigger
from tests.support.clock import parse

NY = "America/New_York"
DEFAULT = DeliveryPolicy(timeout_seconds=30, max_retries=3, backoff_seconds=1)  # the settings' defaults


JUNE_2026 = parse("2026-06-01T00:00:00+00:00")
JUNE_2027 = parse("2027-06-01T00:00:00+00:00")
JUNE_2027_ISO = "2027-06-01T00:00:00+00:00"


def trigger(
    expr: str, tz: str | None = None, *, url: str = "https://api.example.com/x", enabled: bool = True
) -> Trigger:
    return Trigger(cron=expr, url=url, method="POST", timezone=tz, enabled=enabled)


def warn(expr: str, tz: str | None = None, *, now: float = JUNE_2026, path: str = "trigger") -> list[dict[str, str]]:
    return schedule_warnings([(path, trigger(expr, tz))], now=now, policy=DEFAULT)


def codes(warnings: list[dict[str, str]]) -> list[str]:
    return [w["code"] for w in warnings]


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The cron expressions of every `Cron.next_after` call made while the test runs."""
    calls: list[str] = []
    real = cron.Cron.next_after

    def counted(self: cron.Cron, ts: float) -> float:
        calls.append(self.expr)
        return real(self, ts)

    monkeypatch.setattr(cron.Cron, "next_after", counted)
    yield calls


# --- dst_skipped ---------------------------------------------------------------------------------


def test_a_time_in_the_spring_forward_gap() -> None:
    assert warn("30 2 * * *", NY, now=parse("2026-12-04T00:00:00+00:00"), path="triggers[2]") == [
        {
            "path": "triggers[2]",
            "code": "dst_skipped",
            "message": "on 2027-03-14 in America/New_York, clocks jump forward 1 h, from 02:00 to 03:00: its 02:30 "
            "does not exist that day, so it fires once at 2027-03-14T07:00:00Z (03:00 EDT), right after the jump",
        }
    ]


def test_several_times_in_the_gap_fire_together() -> None:
    [warning] = warn("*/15 2 * * *", NY, now=parse("2026-12-04T00:00:00+00:00"))
    assert warning["message"] == (
        "on 2027-03-14 in America/New_York, clocks jump forward 1 h, from 02:00 to 03:00: its times from 02:00 "
        "until 03:00 do not exist that day, so they fire once, together, at 2027-03-14T07:00:00Z (03:00 EDT), "
        "right after the jump"
    )


def test_a_run_at_the_time_right_after_the_gap_is_its_own() -> None:
    # 03:00 EDT is the instant gap times move to, but 03:00 is this cron's own time: nothing is skipped.
    assert warn("0 3 * * *", NY, now=parse("2026-12-04T00:00:00+00:00")) == []


# --- dst_repeated --------------------------------------------------------------------------------


def test_a_fixed_hour_in_the_repeated_hour_fires_once() -> None:
    assert warn("30 1 * * *", NY, path="triggers[0]") == [
        {
            "path": "triggers[0]",
            "code": "dst_repeated",
            "message": "on 2026-11-01 in America/New_York, clocks go back 1 h, so 01:00-02:00 happens twice: its hour "
            "is fixed, so it fires once, at the first 01:30 (EDT, 2026-11-01T05:30:00Z)",
        }
    ]


def test_a_fixed_hour_with_several_times_fires_in_the_first_occurrence() -> None:
    [warning] = warn("0,30 1 * * *", NY)
    assert warning["message"].endswith(
        "its hour is fixed, so it fires only in the first occurrence (EDT), from 01:00 (2026-11-01T05:00:00Z)"
    )


def test_a_wildcard_hour_fires_in_both_occurrences_and_meets_the_gap() -> None:
    assert warn("30 * * * *", NY) == [
        {
            "path": "trigger",
            "code": "dst_repeated",
            "message": "on 2026-11-01 in America/New_York, clocks go back 1 h, so 01:00-02:00 happens twice: its hour "
            "is * or a step, so it fires in both occurrences, from 01:30 EDT (2026-11-01T05:30:00Z) and again from "
            "01:30 EST (2026-11-01T06:30:00Z)",
        },
        {
            "path": "trigger",
            "code": "dst_skipped",
            "message": "on 2027-03-14 in America/New_York, clocks jump forward 1 h, from 02:00 to 03:00: its 02:30 "
            "does not exist that day, so it fires once at 2027-03-14T07:00:00Z (03:00 EDT), right after the jump",
        },
    ]


@pytest.mark.parametrize(
    ("expr", "code", "date"),
    [("15 2 * * *", "dst_skipped", "2026-10-04"), ("45 1 * * *", "dst_repeated", "2027-04-04"), ("30 2 * * *", "", "")],
)
def test_a_half_hour_shift(expr: str, code: str, date: str) -> None:
    warnings = warn(expr, "Australia/Lord_Howe")
    assert codes(warnings) == ([code] if code else [])
    assert all(f"on {date} " in w["message"] and "30 min" in w["message"] for w in warnings)


@pytest.mark.parametrize("tz", [None, "UTC", "Asia/Tokyo"])
def test_no_dst_warning_where_the_clock_never_shifts(tz: str | None) -> None:
    assert warn("30 2 * * *", tz) == []
    assert warn("30 1 * * *", tz) == []


# --- overlap_risk --------------------------------------------------------------------------------


def test_a_firing_can_outlast_the_gap_to_the_next_run() -> None:
    assert DEFAULT.worst_case_seconds == 127  # 30 s x 4 attempts + 1 + 2 + 4 s of backoff
    assert warn("* * * * * *", now=JUNE_2026) == [
        {
            "path": "trigger",
            "code": "overlap_risk",
            "message": "runs as little as 1 s apart (2026-06-01T00:00:01Z and 2026-06-01T00:00:02Z), but one firing "
            "can take up to 2 min 7 s (30 s timeout x 4 attempts + 7 s of backoff between them): two firings of it "
            "can be in flight at once; space the runs further apart or lower the timeout or retries",
        }
    ]


def test_overlap_compares_the_shortest_gap_with_the_worst_case() -> None:
    assert codes(warn("*/2 * * * *")) == ["overlap_risk"]  # 120 s < 127 s
    assert warn("*/3 * * * *") == []  # 180 s
    assert codes(warn("0,1 9 * * *")) == ["overlap_risk"]  # 60 s once a day


def test_a_policy_per_trigger() -> None:
    slow = DeliveryPolicy(timeout_seconds=600, max_retries=0, backoff_seconds=0)
    items = [
        ("triggers[0]", trigger("*/5 * * * *")),
        ("triggers[1]", trigger("*/5 * * * *", url="https://slow.example/")),
    ]

    def policy(t: Trigger) -> DeliveryPolicy:
        return slow if "slow" in t.url else DEFAULT

    [warning] = schedule_warnings(items, now=JUNE_2026, policy=policy)
    assert warning["path"] == "triggers[1]" and warning["code"] == "overlap_risk"
    assert "5 min apart" in warning["message"] and "up to 10 min" in warning["message"]


def test_the_policy_from_the_settings() -> None:
    settings = Settings(delivery_timeout_seconds=10, delivery_max_retries=2, delivery_backoff_seconds=4)
    policy = DeliveryPolicy.from_settings(settings)
    assert policy == DeliveryPolicy(timeout_seconds=10, max_retries=2, backoff_seconds=4)
    assert policy.worst_case_seconds == 10 * 3 + 4 + 8
    with pytest.raises(ValueError, match="timeout must be > 0"):
        DeliveryPolicy(timeout_seconds=0, max_retries=1, backoff_seconds=1)


# --- burst ---------------------------------------------------------------------------------------


def test_more_than_100_triggers_to_one_host_in_the_same_second() -> None:
    items = [(f"triggers[{i}]", trigger("0 9 * * *")) for i in range(101)]
    assert schedule_warnings(items, now=JUNE_2026, policy=DEFAULT) == [
        {
            "path": "triggers",
            "code": "burst",
            "message": "101 triggers send to api.example.com in the same second, at 2026-06-01T09:00:00Z (and in 2 "
            "more such seconds): triggers[0], triggers[1], triggers[2] and 98 more; more than 100 requests at once can "
            "overload the host or be throttled by it, so spread their times over a few seconds or minutes",
        }
    ]


def test_a_burst_counts_a_host_in_any_case_and_port_and_nothing_else() -> None:
    urls = ["https://API.example.com:8443/a", "http://api.example.com/b"]
    items = [(f"triggers[{i}]", trigger("0 9 * * *", url=urls[i % 2])) for i in range(101)]
    assert codes(schedule_warnings(items, now=JUNE_2026, policy=DEFAULT)) == ["burst"]
    assert schedule_warnings(items[:100], now=JUNE_2026, policy=DEFAULT) == []
    elsewhere = [*items[:100], ("triggers[100]", trigger("0 9 * * *", url="https://other.example/"))]
    assert schedule_warnings(elsewhere, now=JUNE_2026, policy=DEFAULT) == []
    # A later run counts too: triggers at 09:00 daily and 09:00 on Tuesdays (2026-06-02) meet on the 2nd.
    mixed = [(f"triggers[{i}]", trigger("0 9 * * *" if i < 60 else "0 9 * * 2")) for i in range(101)]
    [warning] = schedule_warnings(mixed, now=JUNE_2026, policy=DEFAULT)
    assert "at 2026-06-02T09:00:00Z" in warning["message"]


# --- rare ----------------------------------------------------------------------------------------


def test_one_run_in_the_next_366_days() -> None:
    assert warn("0 0 29 2 *", now=JUNE_2027) == [
        {
            "path": "trigger",
            "code": "rare",
            "message": "fires only once in the next 366 days, at 2028-02-29T00:00:00Z; the run after is at "
            "2032-02-29T00:00:00Z",
        }
    ]


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 0 29 2 1#5"])
def test_no_run_in_the_next_366_days(expr: str) -> None:
    [warning] = warn(expr, now=JUNE_2026)
    assert warning == {
        "path": "trigger",
        "code": "rare",
        "message": "never fires in the next 366 days; its next run is at 2028-02-29T00:00:00Z",
    }


# --- what gets no warning, and what it costs ----------------------------------------------------


@pytest.mark.parametrize("tz", [None, NY, "Europe/Berlin"])
def test_a_plain_daily_schedule_gets_none(tz: str | None) -> None:
    assert warn("0 9 * * *", tz) == []
    assert warn("0 9 * * *", tz, now=parse("2027-01-15T12:34:56.5+00:00")) == []


def test_a_disabled_trigger_is_warned_too() -> None:
    items = [("trigger", trigger("0 0 29 2 *", enabled=False))]
    assert codes(schedule_warnings(items, now=JUNE_2026, policy=DEFAULT)) == ["rare"]


def test_a_cron_that_cron_py_cannot_compute_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = Trigger.model_construct(cron="0 0 31 2 *", url="https://a.example/", method="GET", enabled=True)
    assert schedule_warnings([("triggers[0]", stored)], now=JUNE_2026, policy=DEFAULT) == []

    def broken(self: cron.Cron, ts: float) -> float:
        raise cron.CronError("no run time found")

    monkeypatch.setattr(cron.Cron, "next_after", broken)
    assert warn("30 2 * * *", NY) == []


def test_triggers_sharing_a_schedule_compute_it_once(lookups: list[str]) -> None:
    warn("30 * * * *", NY)
    alone = len(lookups)
    lookups.clear()
    items = [(f"triggers[{i}]", trigger("30 * * * *", NY, url=f"https://h{i}.example/")) for i in range(1000)]
    assert len(schedule_warnings(items, now=JUNE_2026, policy=DEFAULT)) == 2000
    assert len(lookups) == alone


def test_every_scan_is_bounded(lookups: list[str]) -> None:
    warn("* * * * * *", NY)
    assert len(lookups) <= MAX_RUNS + 6  # the runs, plus three lookups per transition at most
    lookups.clear()
    items = [(f"triggers[{i}]", trigger(f"{i % 60} {i // 60 % 24} * * *")) for i in range(1000)]
    schedule_warnings(items, now=JUNE_2026, policy=DEFAULT)
    assert len(lookups) <= 10_000  # RUN_BUDGET shared by 1,000 distinct schedules: 10 runs each


def test_a_thousand_distinct_rare_crons() -> None:
    items = [(f"triggers[{i}]", trigger(f"{i % 60} {i // 60} 29 2 1#5")) for i in range(1000)]
    warnings = schedule_warnings(items, now=JUNE_2027, policy=DEFAULT)
    assert codes(warnings) == ["rare"] * 1000
    assert warnings[999]["message"].startswith("fires only once in the next 366 days, at 2028-02-29T16:39:00Z")


def test_a_trigger_s_own_timeout_and_retries_apply_over_the_defaults() -> None:
    own = Trigger(cron="*/2 * * * *", url="https://api.example.com/x", method="POST", timeout_seconds=10)
    assert DEFAULT.of_trigger(own) == DeliveryPolicy(timeout_seconds=10, max_retries=3, backoff_seconds=1)
    assert warn("*/2 * * * *") != [] and schedule_warnings([("t", own)], now=JUNE_2026, policy=DEFAULT) == []
    retry = {"max_retries": 10, "backoff_seconds": 2, "max_backoff_seconds": 8}
    capped = DEFAULT.of_trigger(own.model_copy(update={"retry": RetryConfig(**retry)}))
    assert capped.backoff_total == 2 + 4 + 8 * 8  # each wait capped at max_backoff_seconds
    assert DEFAULT.of_trigger(trigger("* * * * *")) is DEFAULT


def test_a_one_off_gets_no_schedule_warning() -> None:
    once = Trigger(at=JUNE_2027_ISO, url="https://api.example.com/x", method="POST", timeout_seconds=300)
    items = [(f"triggers[{i}]", once) for i in range(101)]
    assert schedule_warnings(items, now=JUNE_2026, policy=DEFAULT) == []


def test_overlap_risk_says_what_the_overlap_policy_does() -> None:
    slow = Trigger(cron="* * * * *", url="https://a.example/", method="POST", timeout_seconds=60, overlap="buffer_one")
    [warning] = schedule_warnings([("t", slow)], now=JUNE_2026, policy=DEFAULT)
    assert warning["code"] == "overlap_risk"
    assert "its overlap policy buffer_one will delay a firing due while another is active" in warning["message"]
