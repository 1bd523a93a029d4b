"""The one place that parses cron expressions and computes run times: croniter computes them.

`scheduler_api.cron_syntax` states the accepted text and rewrites it into croniter expressions
("arms"). This module runs croniter on the wall clock of the expression's time zone (default UTC),
takes the union of the arms (next = the earliest of their nexts, previous = the latest of their
previous ones: a day matching either day field) and applies the DST policy on top.
`tests/test_cron_vectors.py` checks thousands of cases against cron-parser 5.x, the original
service's parser. All times are unix timestamps (floats); run times are whole seconds.

DST policy:
  * a local time that does not exist (spring forward) fires once, at the first instant after the
    gap (several times inside one gap collapse into that one firing);
  * a local time that happens twice (fall back): when the hour field is ``*``/``?`` or a step (every
    list item of it: ``*``, ``*/2``, ``1-23/2``, ``3/6``) the cron runs in every real occurrence, so
    ``* * * * *`` and ``0 * * * *`` keep firing through the repeated hour; when the hour is written
    as values or ranges (``30 1 * * *``, ``0 1-3 * * *``) it fires once, at the first occurrence.
`last_at_or_before` and `next_after` read the same run times:
``last_at_or_before(t) <= t < next_after(last_at_or_before(t))``, with no run time in between.

Failure rules: `parse` raises `CronError` for what `cron_syntax` or croniter refuses, an unknown
time zone and an expression that never matches a real date (``0 0 31 2 *``); `validate` (new input)
also refuses more than `MAX_CRON_LENGTH` characters, a step beyond its field's span and a backwards
range, saying what to write instead, while stored definitions are still read as they fired. A run
time beyond year 9999 raises `CronError`. The validation, the API's previews and the scheduler all
go through `parse` and `next_after`, so the API never accepts what the scheduler cannot run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from scheduler_api import cron_syntax
from scheduler_api.errors import CronError as CronError  # raised by every function here

MAX_CRON_LENGTH = 256  # far more than any real expression; parsing cost grows with the length
_NO_RUN = (CroniterError, ValueError, OverflowError)  # croniter found none (or left years 1-9999)


@dataclass(frozen=True)
class Cron:
    """A validated cron expression, read in the IANA time zone `tz` (default UTC).

    `expr` is the normalised expression (``9-9`` -> ``9``, ``?`` -> ``*``, ``L5`` -> ``5L``, day-of-week
    steps written out): it reads the same here and in cron-descriptor."""

    expr: str
    seconds_first: bool
    tz: str = "UTC"

    def next_after(self, ts: float) -> float:
        """The first run time strictly after `ts` (unix seconds)."""
        if self.tz == "UTC":
            return _next_after(self.expr, self.seconds_first, ts)
        return _next_after_local(self.expr, self.seconds_first, self.tz, ts)

    def last_at_or_before(self, ts: float) -> float:
        """The latest run time at or before `ts`."""
        arms = _arms(self.expr, self.seconds_first)
        if self.tz == "UTC":
            return float(_wall_run(arms, ts, after=False))
        return float(_last_local(arms, self.expr, ZoneInfo(self.tz), math.floor(ts)))

    def next_runs(self, ts: float, count: int) -> list[float]:
        out: list[float] = []
        for _ in range(count):
            ts = self.next_after(ts)
            out.append(ts)
        return out


# --- croniter on wall-clock seconds (a local time counted as if it were UTC) ----------------------
# A croniter iterator holds its position, and threads share the cached ones: each call runs on a
# copy of a template, so an expression is parsed once, not on every call.

_START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@lru_cache(maxsize=4096)
def _arms(expr: str, seconds_first: bool) -> tuple[croniter, ...]:
    """Templates of the expression's arms, less those that never match a real date."""
    arms = []
    for text in cron_syntax.read(expr).arms:
        it = croniter(text, _START, ret_type=float, second_at_beginning=seconds_first)
        try:
            copy.copy(it).get_next(float)
        except _NO_RUN:
            continue
        arms.append(it)
    return tuple(arms)


def _wall_run(arms: tuple[croniter, ...], wall: float, *, after: bool) -> int:
    """The first wall-clock run time strictly after `wall` (`after`), or the last at or before it."""
    found = []
    for arm in arms:
        it = copy.copy(arm)
        try:  # croniter's previous run time is strictly before its start
            found.append(it.get_next(float, wall) if after else it.get_prev(float, math.floor(wall) + 1))
        except _NO_RUN:
            continue
    if not found:
        raise CronError(f"no run time found {'after' if after else 'before'} {wall} (wall clock)")
    return int(min(found) if after else max(found))


@lru_cache(maxsize=65_536)
def _next_after(expr: str, seconds_first: bool, ts: float) -> float:
    # Memoised: in a tick, thousands of triggers share a few expressions and the same due time.
    return float(_wall_run(_arms(expr, seconds_first), ts, after=True))


# --- time zones and the DST policy ----------------------------------------------------------------


def _offset(instant: float, zone: ZoneInfo) -> timedelta:
    return datetime.fromtimestamp(instant, zone).utcoffset() or timedelta()


def _transition(lo: int, hi: int, zone: ZoneInfo) -> int:
    """The first instant in (lo, hi] with the offset of `hi` (`lo` has another one)."""
    after = _offset(hi, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(mid, zone) == after:
            hi = mid
        else:
            lo = mid
    return hi


def _occurrences(wall: int, zone: ZoneInfo) -> tuple[int, int | None]:
    """The instant of a wall-clock time (its first occurrence; for a time in a spring-forward gap,
    the first instant after the gap) and that of its second occurrence if it happens twice."""
    naive = datetime(1970, 1, 1) + timedelta(seconds=wall)
    before = naive.replace(tzinfo=zone).utcoffset() or timedelta()  # fold=0: the earlier offset
    after = naive.replace(tzinfo=zone, fold=1).utcoffset() or timedelta()
    first = wall - int(before.total_seconds())
    if before == after:
        return first, None
    second = wall - int(after.total_seconds())
    if before > after:  # fall back: the wall time happens twice
        return first, second
    return _transition(second, first, zone), None  # spring forward: in the gap


def _repeated_span(local: datetime, zone: ZoneInfo, wall: int) -> tuple[int, int, int] | None:
    """If the wall time of `local` happens twice: the repeated span [start, end) on the wall clock
    and the offset (seconds) of its second occurrence."""
    first, second = _occurrences(wall, zone)
    if second is None:
        return None
    transition = _transition(first, second, zone)
    before, after = wall - first, wall - second
    return transition + after, transition + before, after


@lru_cache(maxsize=65_536)
def _next_after_local(expr: str, seconds_first: bool, tz: str, ts: float) -> float:
    """The first run time after `ts` under the DST policy. Wall-clock run times map to instants in
    wall-clock order except the second occurrences of a repeated span, which come after the span's
    first occurrences and before anything later: those are looked up separately."""
    arms, repeating, zone = _arms(expr, seconds_first), cron_syntax.read(expr).repeating_hour, ZoneInfo(tz)
    now = math.floor(ts)
    local = datetime.fromtimestamp(now, zone)
    wall = now + int((local.utcoffset() or timedelta()).total_seconds())
    span = _repeated_span(local, zone, wall)
    if span is not None and local.fold == 1:  # in the second occurrence
        start, end, offset = span
        if repeating:
            found = _wall_run(arms, wall, after=True)
            if found < end:
                return float(found - offset)
        wall = max(wall, end - 1)  # the rest of the span fired in its first occurrence
    found = _wall_run(arms, wall, after=True)
    instant = _occurrences(found, zone)[0]
    while instant <= now:  # a gap time that maps onto an instant already passed
        found = _wall_run(arms, found, after=True)
        instant = _occurrences(found, zone)[0]
    if span is not None and local.fold == 0 and repeating:  # the span's second occurrence may come first
        start, end, offset = span
        again = _wall_run(arms, start - 1, after=True)
        if again < end:
            instant = min(instant, again - offset)
    return float(instant)


def _last_local(arms: tuple[croniter, ...], expr: str, zone: ZoneInfo, now: int) -> int:
    """The latest run time at or before `now`: the same run times `_next_after_local` gives."""
    repeating = cron_syntax.read(expr).repeating_hour
    local = datetime.fromtimestamp(now, zone)
    wall = now + int((local.utcoffset() or timedelta()).total_seconds())
    span = _repeated_span(local, zone, wall)
    if span is not None and local.fold == 1:  # in the second occurrence
        start, end, offset = span
        if repeating:
            found = _wall_run(arms, wall, after=False)
            if found >= start:
                return found - offset
        wall = end - 1  # the span's first occurrence is entirely before `now`
    found = _wall_run(arms, wall, after=False)
    first, second = _occurrences(found, zone)
    return second if repeating and second is not None and second <= now else first


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
    problems = cron_syntax.read(" ".join(expr.split())).problems
    if problems:
        raise CronError(problems[0])
    return cron


@lru_cache(maxsize=4096)
def parse(expr: str, tz: str = "UTC") -> Cron:
    """Validate `expr` (and `tz`) and return a `Cron`; raise `CronError` saying what is wrong."""
    if not isinstance(expr, str):
        raise CronError("must be a string")
    text = " ".join(expr.split())
    if not text:
        raise CronError("must not be empty")
    try:
        reading = cron_syntax.read(text)
        if cron_syntax.read(reading.expr).arms != reading.arms:  # the normalised form must read the same
            raise CronError(f"normalising {text!r} to {reading.expr!r} changed its meaning")
        arms = _arms(reading.expr, reading.seconds_first)
    except cron_syntax.NotCron as e:
        raise CronError(str(e)) from None
    except CroniterError as e:
        raise CronError(f"{text!r} is not a valid cron expression ({e})") from None
    if not arms:
        raise CronError(f"{text!r} never matches a real date")
    return Cron(reading.expr, reading.seconds_first, check_timezone(tz))


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


def describe(cron: Cron) -> str:
    """A human description of the schedule (cron-descriptor), e.g. "At 09:00, Monday through Friday".
    Never raises: what cron-descriptor cannot describe is given as the expression itself."""
    text = cron.expr
    try:
        from cron_descriptor import Options, get_description

        options = Options()
        options.use_24hour_time_format = True
        described = str(get_description(cron_syntax.MACROS.get(cron.expr, cron.expr), options)).strip()
        if described:
            text = described
    except Exception:  # any failure of the description falls back to the expression
        pass
    return text if cron.tz == "UTC" else f"{text} ({cron.tz})"
