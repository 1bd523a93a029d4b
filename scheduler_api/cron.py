"""The one place that reads cron expressions and computes run times.

Expressions are read the way the original service's parser (BullMQ's cron-parser 5.x), POSIX and
Vixie cron read them; `tests/test_cron_vectors.py` checks thousands of cases against cron-parser
itself. The matcher is this module's own (no croniter), so its behaviour does not move with a
dependency's version.

Accepted forms:
  * five fields, ``minute hour day-of-month month day-of-week`` (``0 9 * * 1-5``);
  * six fields with **seconds first**, as the original (BullMQ) read them (``*/10 * * * * *``);
  * the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly @minutely @secondly
    @weekdays @weekends`` (as cron-parser defines them; ``@midnight`` is ``@daily``).
In a field: ``*`` and ``?`` (the whole field), values, names (``JAN``, ``MON``), ranges (``1-5``; a
range of one value ``9-9`` is that value), steps (``*/15``, ``5/15`` = 5-max/15, ``1-20/5``) and
lists of these. Day of week: ``0`` and ``7`` are Sunday (``5-7`` is Friday to Sunday, ``1/2`` runs to
Sunday); ``5L`` (or ``FRIL``, or croniter's ``L5``) is the last Friday of the month; ``5#3`` the third
Friday. Day of month: ``L`` is the last day; croniter's ``15W`` (nearest weekday) is still read.
When day of month and day of week are both restricted (neither is ``*`` nor ``?``), a day matches if
either matches (POSIX, Vixie, cron-parser), ``#`` and ``L`` forms included.

Refused: seven fields (years) and fewer than five, hashed/random ``H``/``R`` values (they would fire
at times nobody wrote down) and expressions that never match (``0 0 31 2 *``). `validate` (new
input) also refuses a step beyond its field's span (``*/61``) and a range that runs backwards
(``5-1``, ``FRI-MON``); definitions stored before those rules are still read as they fired.

All times are unix timestamps (floats). An expression is read on the wall clock of its time zone
(default UTC). DST policy:
  * a local time that does not exist (spring forward) fires once, at the first instant after the
    gap (several times inside one gap collapse into that one firing);
  * a local time that happens twice (fall back): when the hour field is ``*``/``?`` or a step (every
    list item of it: ``*``, ``*/2``, ``1-23/2``, ``3/6``) the cron runs in every real occurrence, so
    ``* * * * *`` and ``0 * * * *`` keep firing through the repeated hour; when the hour is written
    as values or ranges (``30 1 * * *``, ``0 1-3 * * *``) it fires once, at the first occurrence.
The validation, the API's previews and the scheduler all go through `parse` and `next_after`, so
the API never accepts what the scheduler cannot run.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# cron-parser 5.x's predefined expressions (plus @midnight, croniter's and Vixie's name for @daily).
_MACRO_EXPR = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@minutely": "* * * * *",
    "@secondly": "* * * * * *",
    "@weekdays": "0 0 * * 1-5",
    "@weekends": "0 0 * * 0,6",
}
_MACROS = set(_MACRO_EXPR)
_HASHED = re.compile(r"^[HR](\(|/|#|$)", re.IGNORECASE)


MAX_CRON_LENGTH = 256  # far more than any real expression; parsing cost grows with the length


class CronError(ValueError):
    """The expression is not one we can schedule; the message says why."""


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
            return _next_after(self.expr, ts)
        return _next_after_local(self.expr, self.tz, ts)

    def last_at_or_before(self, ts: float) -> float:
        """The latest run time at or before `ts` (run times are whole seconds). Consistent with
        `next_after`: ``last_at_or_before(t) <= t < next_after(last_at_or_before(t))``."""
        spec = _read(self.expr).spec
        if self.tz == "UTC":
            found = _prev_wall(spec, _wall_of_utc(math.floor(ts)))
            if found is None:
                raise CronError(f"no run time of {self.expr!r} found before {ts}")
            return float(_utc_of_wall(found))
        return _last_local(spec, self.expr, ZoneInfo(self.tz), math.floor(ts))

    def next_runs(self, ts: float, count: int) -> list[float]:
        out: list[float] = []
        for _ in range(count):
            ts = self.next_after(ts)
            out.append(ts)
        return out


# --- reading an expression --------------------------------------------------------------------------

_MONTH_NAMES = {n: i for i, n in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_DOW_NAMES = {n: i for i, n in enumerate("SUN MON TUE WED THU FRI SAT".split())}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int  # day of week: 7 (Sunday again), as cron-parser
    span: int  # distinct values, for the step rule
    names: dict[str, int]


_SECOND = _Field("second", 0, 59, 60, {})
_MINUTE = _Field("minute", 0, 59, 60, {})
_HOUR = _Field("hour", 0, 23, 24, {})
_DOM = _Field("day-of-month", 1, 31, 31, {})
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 0, 7, 7, _DOW_NAMES)
_FIELDS6 = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)

_ATOM = r"(?:\d+|[A-Z]{3})"
_ITEM = re.compile(rf"^(?P<base>\*|(?P<first>{_ATOM})(?:-(?P<last>{_ATOM}|L))?)(?:/(?P<step>\d+))?$")
_NTH = re.compile(rf"^(?P<base>\*|{_ATOM}(?:-{_ATOM})?)#(?P<nth>\d+)$")  # 5#3, FRI#3, *#2, croniter's MON-FRI#2
_LAST_DOW = re.compile(rf"^(?:(?P<a>[0-7]|{_ATOM})L|L(?P<b>[0-7]))$")  # 5L, FRIL; croniter's L5
_NEAREST = re.compile(r"^(?:(?P<a>\d+)W|W(?P<b>\d+))$")  # croniter's 15W / W15


@dataclass(frozen=True)
class _Spec:
    """What an expression matches, field by field (sorted tuples for the time of day)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    dom: frozenset[int]
    dom_last: bool
    dom_nearest: tuple[int, ...]
    dow: frozenset[int]  # 0 = Sunday
    dow_nth: frozenset[tuple[int, int]]  # (weekday, n): the n-th such weekday of the month
    dow_last: frozenset[int]  # the last such weekday of the month
    dom_restricted: bool
    dow_restricted: bool
    repeating_hour: bool  # the hour field is * or steps: runs in both occurrences of a repeated hour

    @property
    def every_day(self) -> bool:
        return not self.dom_restricted and not self.dow_restricted


@dataclass(frozen=True)
class _Reading:
    expr: str  # normalised
    seconds_first: bool
    spec: _Spec
    problems: tuple[str, ...]  # what `validate` refuses on top of `parse`


class _Parsed:
    """One field, parsed: values plus the day fields' special forms."""

    def __init__(self) -> None:
        self.values: set[int] = set()
        self.last = False
        self.nearest: list[int] = []
        self.nth: set[tuple[int, int]] = set()
        self.last_dow: set[int] = set()
        self.all_steps = True  # every item is * or has a step (the hour field's DST reading)
        self.items: list[str] = []  # normalised items


def _value(atom: str, field: _Field, text: str) -> int:
    if atom.isdigit():
        value = int(atom)
    elif atom in field.names:
        value = field.names[atom]
    else:
        raise CronError(f"{atom!r} in {text!r} is not a value of the {field.name} field")
    if not field.low <= value <= field.high:
        raise CronError(f"{atom!r} in {text!r} is out of the {field.name} field's {field.low}-{field.high}")
    return value


def _wrap_suggestion(first: str, last: str, field: _Field) -> str:
    """What to write instead of a backwards range: FRI-MON -> FRI-SUN,MON; 11-2 -> 11-12,1-2."""
    named = not first.isdigit() or not last.isdigit()
    spell = {v: n for n, v in field.names.items()} if named else {}
    top, bottom = field.high, field.low
    if field is _DOW:
        spell[7] = "SUN" if named else "7"
        bottom = 1  # Sunday is the top (7)
        if _value(last, field, last) == 0:
            return f"{first}-{spell[7]}"
    head = first if _value(first, field, first) == top else f"{first}-{spell.get(top, top)}"
    tail = last if _value(last, field, last) == bottom else f"{spell.get(bottom, bottom)}-{last}"
    return f"{head},{tail}"


def _read_field(text: str, field: _Field, problems: list[str]) -> _Parsed:
    out = _Parsed()
    if not text:
        raise CronError(f"empty {field.name} field")
    for raw in text.split(","):
        if not raw:
            raise CronError(f"empty list item in {text!r} ({field.name} field)")
        item = raw.upper()
        if item.startswith("?"):
            item = "*" + item[1:]  # `?` is `*`, in any field (cron-parser)
        if field is _DOW:
            nth = _NTH.match(item)
            if nth:
                n = int(nth["nth"])
                if not 1 <= n <= 5:
                    raise CronError(f"{raw!r}: the occurrence after # must be 1 to 5")
                base = nth["base"]
                days = _expand(base, field, text, problems)
                out.nth.update((d % 7, n) for d in days)
                out.items.append(f"{_norm_base(base, days)}#{n}")
                out.all_steps = False
                continue
            last = _LAST_DOW.match(item)
            if last:
                day = _value(last["a"] or last["b"], field, text) % 7
                out.last_dow.add(day)
                out.items.append(f"{day}L")
                out.all_steps = False
                continue
        if field is _DOM:
            if item == "L":
                out.last = True
                out.items.append("L")
                out.all_steps = False
                continue
            nearest = _NEAREST.match(item)
            if nearest:
                day = int(nearest["a"] or nearest["b"])
                if not 1 <= day <= 31:
                    raise CronError(f"{raw!r}: the day before W must be 1 to 31")
                out.nearest.append(day)
                out.items.append(f"{day}W")
                out.all_steps = False
                continue
        m = _ITEM.match(item)
        if not m:
            raise CronError(f"{raw!r} is not a valid {field.name} value")
        values = _expand(item, field, text, problems)
        out.values.update(v % 7 if field is _DOW else v for v in values)
        if m["step"] is None or (m["last"] is not None and len(values) == 1):  # 3-3/2 is 3, not a step
            out.all_steps = m["base"] == "*" and out.all_steps
        out.items.append(_norm_item(raw, m, field, values))
    return out


def _expand(item: str, field: _Field, text: str, problems: list[str]) -> list[int]:
    """The values of one item (no # or L): *, a, a-b, with an optional /step."""
    m = _ITEM.match(item)
    if not m:
        raise CronError(f"{item!r} is not a valid {field.name} value")
    step = 1
    if m["step"] is not None:
        step = int(m["step"])
        if step == 0:
            raise CronError(f"step 0 in {item!r} ({field.name} field) never moves; use a step of 1 or more")
        if step > field.span:
            problems.append(f"step {m['step']} in {item!r} is larger than the {field.name} field's {field.span} values")
    if m["base"] == "*":
        return list(range(field.low, field.high + 1, step))
    first = _value(m["first"], field, text)
    if m["last"] is None:
        # a/step runs to the field's end (day of week: to 7 = Sunday, as cron-parser)
        return [first] if m["step"] is None else list(range(first, field.high + 1, step))
    if m["last"] == "L":
        if field is not _DOM:
            raise CronError(f"{item!r}: L ends a range only in the day-of-month field")
        last = 31  # croniter's a-L: a to 31
    else:
        last = _value(m["last"], field, text)
    if field is _DOW and last == 0 and first > 0 and not m["last"].isdigit():
        last = 7  # FRI-SUN: Sunday ends a range as 7
    if first <= last:
        return list(range(first, last + 1, step))
    # Backwards: refused for new input; a stored definition keeps firing as croniter read it (wrapped).
    problems.append(
        f"range {m['base']!r} in the {field.name} field runs backwards; "
        f"write {_wrap_suggestion(m['first'], m['last'], field)!r} instead"
    )
    if field is _DOW and first == 7:
        return list(range(0, last + 1, step))
    high = 6 if field is _DOW else field.high
    values = list(range(first, high + 1, step))
    skip = step - (high - values[-1]) if values else 0  # croniter's wrap, step for step
    values += range(field.low + (skip if skip > 1 else 0), last + 1, step)
    return values


def _norm_base(base: str, days: list[int]) -> str:
    return str(days[0] % 7) if len(set(d % 7 for d in days)) == 1 and base != "*" else base


def _norm_item(raw: str, m: re.Match[str], field: _Field, values: list[int]) -> str:
    """The item as cron-descriptor should read it: ? -> *, a range of one value -> the value,
    a day-of-week step -> its days, a-L -> a-31, and otherwise as written."""
    if m["last"] is not None and len(values) == 1:
        return raw.split("-")[0]  # 9-9, MON-MON/2 -> 9, MON
    if field is _DOW and m["step"] is not None:
        return ",".join(str(v) for v in sorted({v % 7 for v in values}))
    base = "*" if raw.startswith("?") else raw.split("/")[0]
    if m["last"] == "L":
        base = f"{m['first']}-31"
    return base if m["step"] is None else f"{base}/{m['step']}"


@lru_cache(maxsize=4096)
def _read(text: str) -> _Reading:
    """Read a whitespace-normalised expression; raise `CronError` saying what is wrong."""
    if text.startswith("@"):
        macro = text.lower()
        if macro not in _MACROS:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(sorted(_MACROS))}")
        inner = _read(_MACRO_EXPR[macro])
        return _Reading(macro, inner.seconds_first, inner.spec, ())
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise CronError(
            f"must have 5 fields (minute hour day month weekday) or 6 with seconds first, got {len(fields)} in {text!r}"
        )
    for field_text in fields:
        for part in field_text.split(","):
            if _HASHED.match(part):
                raise CronError(f"hashed or random values ({part!r}) are not supported")
    seconds_first = len(fields) == 6
    six = fields if seconds_first else ["0", *fields]
    problems: list[str] = []
    try:
        parsed = [_read_field(t, f, problems) for t, f in zip(six, _FIELDS6, strict=True)]
    except CronError as e:
        raise CronError(f"{text!r} is not a valid cron expression: {e}") from None
    sec, minute, hour, dom, month, dow = parsed
    for p, f in ((sec, _SECOND), (minute, _MINUTE), (hour, _HOUR), (month, _MONTH)):
        if not p.values:  # only the day fields have forms beyond values
            raise CronError(f"{text!r} is not a valid cron expression: no {f.name} value")
    spec = _Spec(
        seconds=tuple(sorted(sec.values)),
        minutes=tuple(sorted(minute.values)),
        hours=tuple(sorted(hour.values)),
        months=frozenset(month.values),
        dom=frozenset(dom.values),
        dom_last=dom.last,
        dom_nearest=tuple(sorted(set(dom.nearest))),
        dow=frozenset(dow.values),
        dow_nth=frozenset(dow.nth),
        dow_last=frozenset(dow.last_dow),
        dom_restricted=six[3] not in ("*", "?"),
        dow_restricted=six[5] not in ("*", "?"),
        repeating_hour=hour.all_steps,
    )
    normalised = [",".join(p.items) for p in parsed]
    expr = " ".join(normalised if seconds_first else normalised[1:])
    return _Reading(expr, seconds_first, spec, tuple(problems))


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
    problems = _read(" ".join(expr.split())).problems
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
    reading = _read(text)
    if _read(reading.expr).spec != reading.spec:  # the normalised form must read the same
        raise AssertionError(f"normalising {text!r} to {reading.expr!r} changed its meaning")
    if _next_wall(reading.spec, (date(2026, 1, 1).toordinal(), 0)) is None:
        raise CronError(f"{text!r} never matches a real date")
    return Cron(reading.expr, reading.seconds_first, check_timezone(tz))


# --- matching ---------------------------------------------------------------------------------------

# A wall-clock time is (proleptic ordinal of the date, second of the day). The Gregorian calendar
# repeats every 400 years, so a day pattern with no match in 400 years has none at all.
_Wall = tuple[int, int]
_SEARCH_DAYS = 146_097 + 1
_EPOCH = date(1970, 1, 1).toordinal()


def _last_day(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _nearest_weekday(year: int, month: int, day: int, last: int) -> int:
    """croniter's W: the weekday (Mon-Fri) nearest `day` within the month."""
    day = min(day, last)
    weekday = date(year, month, day).weekday()  # 0 = Monday
    if weekday < 5:
        return day
    if weekday == 5:
        return day - 1 if day > 1 else day + 2
    return day + 1 if day < last else day - 2


def _day_matches(spec: _Spec, d: date) -> bool:
    last = _last_day(d.year, d.month)
    dom = (
        d.day in spec.dom
        or (spec.dom_last and d.day == last)
        or any(d.day == _nearest_weekday(d.year, d.month, w, last) for w in spec.dom_nearest)
    )
    weekday = d.isoweekday() % 7
    dow = (
        weekday in spec.dow
        or (weekday, (d.day + 6) // 7) in spec.dow_nth
        or (weekday in spec.dow_last and d.day > last - 7)
    )
    if spec.dom_restricted and spec.dow_restricted:
        return dom or dow
    return dom if spec.dom_restricted else dow


def _time_after(spec: _Spec, second: int) -> int | None:
    """The first matching second of the day strictly after `second` (-1: from the day's start)."""
    if second < 0:
        return spec.hours[0] * 3600 + spec.minutes[0] * 60 + spec.seconds[0]
    h, rest = divmod(second, 3600)
    mi, s = divmod(rest, 60)
    hours, minutes, seconds = spec.hours, spec.minutes, spec.seconds
    i = bisect_left(hours, h)
    if i < len(hours) and hours[i] == h:
        j = bisect_left(minutes, mi)
        if j < len(minutes) and minutes[j] == mi:
            k = bisect_right(seconds, s)
            if k < len(seconds):
                return h * 3600 + mi * 60 + seconds[k]
            j += 1
        if j < len(minutes):
            return h * 3600 + minutes[j] * 60 + seconds[0]
        i += 1
    if i < len(hours):
        return hours[i] * 3600 + minutes[0] * 60 + seconds[0]
    return None


def _time_at_or_before(spec: _Spec, second: int) -> int | None:
    """The last matching second of the day at or before `second` (86400: up to the day's end)."""
    if second >= 86_400:
        return spec.hours[-1] * 3600 + spec.minutes[-1] * 60 + spec.seconds[-1]
    h, rest = divmod(second, 3600)
    mi, s = divmod(rest, 60)
    hours, minutes, seconds = spec.hours, spec.minutes, spec.seconds
    i = bisect_right(hours, h) - 1
    if i >= 0 and hours[i] == h:
        j = bisect_right(minutes, mi) - 1
        if j >= 0 and minutes[j] == mi:
            k = bisect_right(seconds, s) - 1
            if k >= 0:
                return h * 3600 + mi * 60 + seconds[k]
            j -= 1
        if j >= 0:
            return h * 3600 + minutes[j] * 60 + seconds[-1]
        i -= 1
    if i >= 0:
        return hours[i] * 3600 + minutes[-1] * 60 + seconds[-1]
    return None


def _next_wall(spec: _Spec, wall: _Wall) -> _Wall | None:
    """The first matching wall-clock time strictly after `wall` (None: none within 400 years)."""
    ordinal, second = wall
    months = spec.months
    try:
        d = date.fromordinal(ordinal)
        if d.month in months and (spec.every_day or _day_matches(spec, d)):
            t = _time_after(spec, second)
            if t is not None:
                return ordinal, t
        first = _time_after(spec, -1)
        assert first is not None
        end = ordinal + _SEARCH_DAYS
        ordinal += 1
        while ordinal < end:
            d = date.fromordinal(ordinal)
            if d.month not in months:  # on to the first of the next month
                ordinal += _last_day(d.year, d.month) - d.day + 1
                continue
            if spec.every_day or _day_matches(spec, d):
                return ordinal, first
            ordinal += 1
    except (ValueError, OverflowError):  # beyond year 9999
        return None
    return None


def _prev_wall(spec: _Spec, wall: _Wall) -> _Wall | None:
    """The last matching wall-clock time at or before `wall`."""
    ordinal, second = wall
    months = spec.months
    try:
        d = date.fromordinal(ordinal)
        if d.month in months and (spec.every_day or _day_matches(spec, d)):
            t = _time_at_or_before(spec, second)
            if t is not None:
                return ordinal, t
        last = _time_at_or_before(spec, 86_400)
        assert last is not None
        end = ordinal - _SEARCH_DAYS
        ordinal -= 1
        while ordinal > end:
            d = date.fromordinal(ordinal)
            if d.month not in months:  # back to the last day of the previous month
                ordinal -= d.day
                continue
            if spec.every_day or _day_matches(spec, d):
                return ordinal, last
            ordinal -= 1
    except (ValueError, OverflowError):
        return None
    return None


def _wall_of_utc(seconds: int) -> _Wall:
    days, second = divmod(seconds, 86_400)
    return days + _EPOCH, second


def _utc_of_wall(wall: _Wall) -> int:
    return (wall[0] - _EPOCH) * 86_400 + wall[1]


@lru_cache(maxsize=65_536)
def _next_after(expr: str, ts: float) -> float:
    # Memoised: in a tick, thousands of triggers share a few expressions and the same due time.
    found = _next_wall(_read(expr).spec, _wall_of_utc(math.floor(ts)))
    if found is None:
        raise CronError(f"no run time of {expr!r} found after {ts}")
    return float(_utc_of_wall(found))


# --- time zones and the DST policy ----------------------------------------------------------------


def _wall_of(local: datetime) -> _Wall:
    return local.toordinal(), local.hour * 3600 + local.minute * 60 + local.second


def _naive(wall: _Wall) -> datetime:
    return datetime.fromordinal(wall[0]) + timedelta(seconds=wall[1])


def _instant(wall: _Wall, zone: ZoneInfo) -> int:
    """Unix time of a local wall time: its first occurrence if it happens twice, the first instant
    after the jump if it does not exist (spring forward)."""
    naive = _naive(wall)
    first = naive.replace(tzinfo=zone, fold=0)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
        return int(first.timestamp())  # exists; fold=0 is the first of two occurrences
    # In a gap: zoneinfo maps fold=1 before the transition and fold=0 after it; the transition
    # is the first instant whose offset is the later one. Bisect to the second.
    lo = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(first.timestamp())
    after = datetime.fromtimestamp(hi, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi


def _second_instant(wall: _Wall, zone: ZoneInfo) -> int:
    """Unix time of the second occurrence of a wall time that happens twice."""
    return int(_naive(wall).replace(tzinfo=zone, fold=1).timestamp())


def _repeated(local: datetime, zone: ZoneInfo) -> tuple[_Wall, _Wall] | None:
    """If the wall time of `local` happens twice (fall back), the repeated wall-clock span
    [start, end) (its first occurrence ends, and its second begins, at the transition)."""
    other = local.replace(fold=1 - local.fold)
    if other.utcoffset() == local.utcoffset():
        return None
    naive = local.replace(tzinfo=None)
    first = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    second = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    before = datetime.fromtimestamp(first, zone).utcoffset()
    lo, hi = first, second  # the transition: the first instant with the later offset
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return _wall_of(datetime.fromtimestamp(hi, zone)), _plus(_wall_of(datetime.fromtimestamp(hi - 1, zone)), 1)


def _happens_twice(wall: _Wall, zone: ZoneInfo) -> bool:
    naive = _naive(wall)
    first = naive.replace(tzinfo=zone)
    if first.replace(fold=1).utcoffset() == first.utcoffset():
        return False
    return first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive  # not in a gap


def _plus(wall: _Wall, seconds: int) -> _Wall:
    days, second = divmod(wall[1] + seconds, 86_400)
    return wall[0] + days, second


@lru_cache(maxsize=65_536)
def _next_after_local(expr: str, tz: str, ts: float) -> float:
    """The DST policy (see the module docstring). Matches are found on the local wall clock and
    mapped to instants; every instant at or before `ts` is skipped."""
    spec = _read(expr).spec
    zone = ZoneInfo(tz)
    seconds = math.floor(ts)
    local = datetime.fromtimestamp(seconds, zone)
    wall = _wall_of(local)
    span = _repeated(local, zone)
    if span is not None and local.fold == 1:
        # In the second occurrence of a repeated hour: a repeating-hour cron runs the rest of it;
        # otherwise its wall times already fired in the first occurrence.
        start, end = span
        if spec.repeating_hour:
            found = _next_wall(spec, wall)
            if found is not None and found < end:
                return float(_second_instant(found, zone))
        wall = max(wall, _plus(end, -1))
    for _ in range(_MAX_SCAN):
        found = _next_wall(spec, wall)
        if found is None:
            break
        instant = _instant(found, zone)
        if instant > seconds:
            if span is not None and local.fold == 0 and spec.repeating_hour:
                # In the first occurrence of a repeated hour: the second occurrence comes first
                # when the first has no run time left.
                start, end = span
                again = _next_wall(spec, _plus(start, -1))
                if again is not None and again < end:
                    instant = min(instant, _second_instant(again, zone))
            return float(instant)
        wall = found
    raise CronError(f"no run time of {expr!r} found after {ts}")


def _last_local(spec: _Spec, expr: str, zone: ZoneInfo, seconds: int) -> float:
    local = datetime.fromtimestamp(seconds, zone)
    wall = _wall_of(local)
    span = _repeated(local, zone)
    if span is not None and local.fold == 1:
        start, end = span
        if spec.repeating_hour:
            found = _prev_wall(spec, wall)
            if found is not None and found >= start:
                return float(_second_instant(found, zone))
        # The wall times up to the repeated span's end fired in its first occurrence.
        wall = _plus(end, -1)
    found = _prev_wall(spec, wall)
    if found is None:
        raise CronError(f"no run time of {expr!r} found before {seconds}")
    if spec.repeating_hour:
        if _happens_twice(found, zone):
            second = _second_instant(found, zone)
            if second <= seconds:
                return float(second)
    return float(_instant(found, zone))


_MAX_SCAN = 1000  # gap times that collapse onto instants already passed, at most


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
        described = str(get_description(_MACRO_EXPR.get(cron.expr, cron.expr), options)).strip()
        if described:
            text = described
    except Exception:  # any failure of the description falls back to the expression
        pass
    return text if cron.tz == "UTC" else f"{text} ({cron.tz})"
