"""The one place that parses cron expressions and computes run times (croniter).

Accepted forms:
  * five fields, ``minute hour day-of-month month day-of-week`` (``0 9 * * 1-5``);
  * six fields with **seconds first**, as the original (BullMQ) read them (``*/10 * * * * *``);
  * the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``.
Names (``JAN``, ``MON``), ranges, lists, steps and croniter's ``L``, ``W`` and ``#`` are accepted.
Rejected: seven fields (years), croniter's hashed/random ``H``/``R`` values (they would fire at
times nobody wrote down) and expressions that never match (``0 0 31 2 *``).

All times are unix timestamps (floats). An expression is read on the wall clock of its time zone
(default UTC). DST policy: a local time that does not exist (spring forward) fires once, at the
first instant after the gap; a local time that happens twice (fall back) fires once, at its first
occurrence. The validation, the API's previews and the
scheduler all go through `parse` and `next_after`, so the API never accepts what the scheduler
cannot run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from scheduler_api.errors import CronError as CronError  # raised by every function here

_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_HASHED = re.compile(r"^[HR](\(|/|$)", re.IGNORECASE)


MAX_CRON_LENGTH = 256  # far more than any real expression; parsing cost grows with the length


@dataclass(frozen=True)
class Cron:
    """A validated cron expression, read in the IANA time zone `tz` (default UTC)."""

    expr: str
    seconds_first: bool
    tz: str = "UTC"

    def next_after(self, ts: float) -> float:
        """The first run time strictly after `ts` (unix seconds)."""
        if self.tz == "UTC":
            return _next_after(self.expr, self.seconds_first, ts)
        return _next_after_local(self.expr, self.seconds_first, self.tz, ts)

    def last_at_or_before(self, ts: float) -> float:
        """The latest run time at or before `ts` (run times are whole seconds)."""
        if self.tz == "UTC":
            # croniter's get_prev is strictly before its start.
            it = croniter(self.expr, math.floor(ts) + 1, ret_type=float, second_at_beginning=self.seconds_first)
            return float(it.get_prev(float))
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(math.floor(ts), zone)
        wall = local.replace(tzinfo=None) + timedelta(seconds=1)
        if local.fold:
            # `ts` is in the second occurrence of a repeated hour (fall back). Every wall time of
            # that hour maps to its first occurrence, before `ts`, so the latest run time may be
            # as late as the hour's end: start the scan one offset change later (instants after
            # `ts` are skipped below).
            shift = (local.replace(fold=0).utcoffset() or timedelta()) - (local.utcoffset() or timedelta())
            wall += max(shift, timedelta())
        it = croniter(self.expr, wall, ret_type=datetime, second_at_beginning=self.seconds_first)
        for _ in range(_MAX_SCAN):
            instant = _instant(it.get_prev(datetime), zone)
            if instant <= ts:
                return instant
        raise CronError(f"no run time of {self.expr!r} found before {ts}")

    def next_runs(self, ts: float, count: int) -> list[float]:
        out: list[float] = []
        for _ in range(count):
            ts = self.next_after(ts)
            out.append(ts)
        return out


_MAX_SCAN = 100_000  # wall-clock matches skipped at most: an hour of a per-second cron, with room


@lru_cache(maxsize=65_536)
def _next_after(expr: str, seconds_first: bool, ts: float) -> float:
    # Memoised: in a tick, thousands of triggers share a few expressions and the same due time.
    it = croniter(expr, ts, ret_type=float, second_at_beginning=seconds_first)
    return float(it.get_next(float))


@lru_cache(maxsize=65_536)
def _next_after_local(expr: str, seconds_first: bool, tz: str, ts: float) -> float:
    """The DST policy. Matches are found on the local wall clock and mapped to instants:
    a wall time in a spring-forward gap maps to the first instant after the gap, a wall time
    that occurs twice maps to its first occurrence (so it fires once), and every instant at or
    before `ts` is skipped - several gap times collapse onto one instant, which fires once."""
    zone = ZoneInfo(tz)
    wall = datetime.fromtimestamp(math.floor(ts), zone).replace(tzinfo=None)
    it = croniter(expr, wall, ret_type=datetime, second_at_beginning=seconds_first)
    for _ in range(_MAX_SCAN):
        instant = _instant(it.get_next(datetime), zone)
        if instant > ts:
            return instant
    raise CronError(f"no run time of {expr!r} found after {ts}")


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """Unix time of the naive local `wall` time under the DST policy (see `_next_after_local`)."""
    first = wall.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall:
        return first.timestamp()  # exists; fold=0 is the first of two occurrences
    # In a gap: zoneinfo maps fold=1 before the transition and fold=0 after it; the transition
    # is the first instant whose offset is the later one. Bisect to the second.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(first.timestamp())
    after = datetime.fromtimestamp(hi, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return float(hi)


def check_timezone(tz: str) -> str:
    """Return `tz` if it is a known IANA zone name, else raise `CronError`."""
    if not isinstance(tz, str) or not tz or len(tz) > 64:
        raise CronError("must be an IANA time zone name such as 'Europe/Paris'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise CronError(f"unknown time zone {tz!r}; use an IANA name such as 'America/New_York'") from e
    return tz


def validate(expr: str, tz: str = "UTC") -> Cron:
    """`parse` plus the rules only new input must follow (what the API accepts): at most
    `MAX_CRON_LENGTH` characters, no step beyond its field's span, no range that runs backwards.
    Definitions stored before a rule existed are still parsed (and fire) as they were."""
    if isinstance(expr, str) and len(expr) > MAX_CRON_LENGTH:
        raise CronError(f"must be at most {MAX_CRON_LENGTH} characters, got {len(expr)}")
    cron = parse(expr, tz)
    if not cron.expr.startswith("@"):
        _check_steps_and_ranges(cron.expr.split(" "), cron.seconds_first)
    return cron


@lru_cache(maxsize=4096)
def parse(expr: str, tz: str = "UTC") -> Cron:
    """Validate `expr` (and `tz`) and return a `Cron`; raise `CronError` saying what is wrong."""
    if not isinstance(expr, str):
        raise CronError("must be a string")
    text = " ".join(expr.split())
    if not text:
        raise CronError("must not be empty")
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(sorted(_MACROS))}")
        fields = [text.lower()]
        seconds_first = False
    else:
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise CronError(
                f"must have 5 fields (minute hour day month weekday) or 6 with seconds first, "
                f"got {len(fields)} in {text!r}"
            )
        for field in fields:
            for part in field.split(","):
                if _HASHED.match(part):
                    raise CronError(f"hashed or random values ({part!r}) are not supported")
        seconds_first = len(fields) == 6
    normalized = " ".join(fields)
    try:
        valid = croniter.is_valid(normalized, second_at_beginning=seconds_first)
    except (CroniterError, ValueError, TypeError, KeyError, IndexError):
        valid = False
    if not valid:
        raise CronError(f"{text!r} is not a valid cron expression")
    cron = Cron(normalized, seconds_first, check_timezone(tz))
    try:
        cron.next_after(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    except (CroniterError, ValueError, OverflowError) as e:
        raise CronError(f"{text!r} never matches a real date") from e
    return cron


# (name, span) of each field, in order: a step beyond the span or a range that runs backwards
# is accepted by croniter but not what it reads like (*/61 in minutes fires hourly, 7-0 daily).
_FIELDS = (("minute", 60), ("hour", 24), ("day-of-month", 31), ("month", 12), ("day-of-week", 7))
_STEP = re.compile(r"^(?P<base>[^/]*)/(?P<step>\d+)$")
_NUMERIC_RANGE = re.compile(r"^(?P<first>\d+)-(?P<last>\d+)$")


def _check_steps_and_ranges(fields: list[str], seconds_first: bool) -> None:
    names = (("second", 60), *_FIELDS) if seconds_first else _FIELDS
    for field, (name, span) in zip(fields, names, strict=True):
        for part in field.split(","):
            base = part
            step = _STEP.match(part)
            if step:
                base = step["base"]
                if int(step["step"]) > span:
                    raise CronError(f"step {step['step']} in {part!r} is larger than the {name} field's {span} values")
            numeric = _NUMERIC_RANGE.match(base)
            if numeric and int(numeric["first"]) > int(numeric["last"]):
                raise CronError(f"range {base!r} in the {name} field runs backwards")


def iso(ts: float) -> str:
    """ISO 8601 UTC with a `Z`, milliseconds only when the time has them (a fraction that rounds to
    0 microseconds has none; otherwise milliseconds truncated, as `datetime.isoformat` does).

    Hot: every delivery formats two or three times, so the date part is cached per second."""
    seconds = math.floor(ts)
    micro = round((ts - seconds) * 1_000_000)  # half-even, as datetime.fromtimestamp rounds
    if micro >= 1_000_000:
        seconds, micro = seconds + 1, 0
    if micro:
        return f"{_iso_second(seconds)}.{micro // 1000:03d}Z"
    return _iso_second(seconds) + "Z"


@lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat(timespec="seconds")


_MACRO_EXPR = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def describe(cron: Cron) -> str:
    """A human description of the schedule (cron-descriptor), e.g. "At 09:00, Monday through Friday"."""
    from cron_descriptor import Options, get_description

    options = Options()
    options.use_24hour_time_format = True
    text = str(get_description(_MACRO_EXPR.get(cron.expr, cron.expr), options))
    return text if cron.tz == "UTC" else f"{text} ({cron.tz})"
