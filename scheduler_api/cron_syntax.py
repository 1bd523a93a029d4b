"""Reading cron text: the rules of `scheduler_api.cron`, turned into expressions croniter reads right.

`read` takes a whitespace-normalised expression and returns a `Reading`: the normalised text (what
`Cron.expr` holds and cron-descriptor describes), the croniter expressions ("arms") whose run times
together are the expression's, whether the hour field repeats (the DST policy) and the problems
`validate` refuses on top of `parse`. croniter computes every run time; this module only rewrites
text. The rules, as cron-parser 5.x, POSIX and Vixie cron read an expression:

  * five fields ``minute hour day-of-month month day-of-week`` or six with seconds first; macros
    ``@yearly @annually @monthly @weekly @daily @midnight @hourly @minutely @secondly @weekdays
    @weekends`` (cron-parser's definitions, any case);
  * ``?`` is ``*`` in any field (croniter takes it alone and only in the day fields);
  * a range or step holding one value is that value: ``9-9`` and ``9-9/2`` are ``9``, ``MON-MON`` is
    ``MON`` (croniter reads an equal range as the whole cycle) and ``59/15`` is ``59``;
  * day of week: ``0`` and ``7`` are Sunday, also at the end of a range or step (``5-7``, ``FRI-SUN``,
    ``1/2`` = Mon, Wed, Fri, Sun; croniter's range is 0-6), so its ranges and steps are written out
    as day lists; ``5L``/``FRIL``/``L5`` (croniter's spelling) is the last Friday of the month,
    ``5#3``/``FRI#3`` the third Friday, ``MON-WED#2`` and ``*#2`` each of those days' second;
  * day of month: ``L`` the last day, ``a-L`` is ``a-31``; ``15W`` croniter's nearest weekday;
  * when day of month and day of week are both restricted (neither is ``*`` nor ``?``), a day matches
    if either matches, ``#``, ``L`` and ``W`` forms included. croniter keeps ``#``, ``L`` and ``W``
    as an AND with the other field and refuses a day-of-week list mixing values with ``#``/``L``
    items and a ``W`` in a list, so each such part becomes an arm of its own with the other day
    field ``*``;
  * a range running backwards (``50-10``, ``FRI-MON``) is read as croniter reads it (wrapped), so
    stored definitions keep firing; new input gets a problem saying what to write instead.

Failure rules: `NotCron` (a ValueError, with the reason) for the wrong number of fields, an unknown
macro, hashed/random ``H``/``R`` values, a value outside its field, an unknown name (names are three
letters), step 0, ``#`` outside 1-5, ``W`` outside 1-31, ``L`` or ``W`` outside the day fields and
empty fields or list items. Problems (refused by `validate` only): a step beyond its field's span
(``*/61`` minutes fires hourly) and a backwards range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from scheduler_api.errors import CronError


class NotCron(CronError):
    """The text is not a cron expression; the message says why."""


# cron-parser 5.x's predefined expressions (plus @midnight, croniter's and Vixie's name for @daily).
MACROS = {
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
_HASHED = re.compile(r"^[HR](\(|/|#|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    expr: str  # normalised text: Cron.expr, what cron-descriptor reads
    seconds_first: bool
    arms: tuple[str, ...]  # croniter expressions (seconds first when seconds_first); a time runs if any does
    repeating_hour: bool  # the hour field is * or steps: it runs in both occurrences of a repeated hour
    problems: tuple[str, ...]  # what `validate` refuses on top of `parse`


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int  # day of week: 7 (Sunday again), as cron-parser
    span: int  # distinct values, for the step rule
    names: dict[str, int]


_MONTH_NAMES = {n: i for i, n in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_DOW_NAMES = {n: i for i, n in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_SECOND = _Field("second", 0, 59, 60, {})
_MINUTE = _Field("minute", 0, 59, 60, {})
_HOUR = _Field("hour", 0, 23, 24, {})
_DOM = _Field("day-of-month", 1, 31, 31, {})
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES)
_DOW = _Field("day-of-week", 0, 7, 7, _DOW_NAMES)
_FIELDS6 = (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW)

_ATOM = r"(?:\d+|[A-Z]{3})"
_ITEM = re.compile(rf"^(?P<base>\*|(?P<first>{_ATOM})(?:-(?P<last>{_ATOM}|L))?)(?:/(?P<step>\d+))?$")
_NTH = re.compile(rf"^(?P<base>\*|{_ATOM}(?:-{_ATOM})?)#(?P<nth>\d+)$")  # 5#3, FRI#3, *#2, MON-WED#2
_LAST_DOW = re.compile(rf"^(?:(?P<a>[0-7]|{_ATOM})L|L(?P<b>[0-7]))$")  # 5L, FRIL; croniter's L5
_NEAREST = re.compile(r"^(?:(?P<a>\d+)W|W(?P<b>\d+))$")  # croniter's 15W / W15


@dataclass
class _Part:
    """One field: its normalised items, croniter items (`plain`: one list; `special`: croniter texts
    that each need an arm of their own) and whether every item is * or a step."""

    items: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    all_steps: bool = True


def _value(atom: str, f: _Field, text: str) -> int:
    if atom.isdigit():
        value = int(atom)
    elif atom in f.names:
        value = f.names[atom]
    else:
        raise NotCron(f"{atom!r} in {text!r} is not a value of the {f.name} field")
    if not f.low <= value <= f.high:
        raise NotCron(f"{atom!r} in {text!r} is out of the {f.name} field's {f.low}-{f.high}")
    return value


def _wrap_suggestion(first: str, last: str, f: _Field) -> str:
    """What to write instead of a backwards range: FRI-MON -> FRI-SUN,MON; 11-2 -> 11-12,1-2."""
    named = not first.isdigit() or not last.isdigit()
    spell = {v: n for n, v in f.names.items()} if named else {}
    top, bottom = f.high, f.low
    if f is _DOW:
        spell[7] = "SUN" if named else "7"
        bottom = 1  # Sunday is the top (7)
        if _value(last, f, last) == 0:
            return f"{first}-{spell[7]}"
    head = first if _value(first, f, first) == top else f"{first}-{spell.get(top, top)}"
    tail = last if _value(last, f, last) == bottom else f"{spell.get(bottom, bottom)}-{last}"
    return f"{head},{tail}"


def _values(m: re.Match[str], f: _Field, text: str, problems: list[str]) -> list[int] | None:
    """The values of one item (``*``, ``a``, ``a-b``, with an optional step); None for a range that
    runs backwards (croniter reads those itself)."""
    step = 1
    if m["step"] is not None:
        step = int(m["step"])
        if step == 0:
            raise NotCron(f"step 0 in {m[0]!r} ({f.name} field) never moves; use a step of 1 or more")
        if step > f.span:
            problems.append(f"step {m['step']} in {m[0]!r} is larger than the {f.name} field's {f.span} values")
    if m["base"] == "*":
        return list(range(f.low, f.high + 1, step))
    first = _value(m["first"], f, text)
    if m["last"] is None:  # a/step runs to the field's end (day of week: to 7 = Sunday)
        return [first] if m["step"] is None else list(range(first, f.high + 1, step))
    if m["last"] == "L":
        if f is not _DOM:
            raise NotCron(f"{m[0]!r}: L ends a range only in the day-of-month field")
        last = 31
    else:
        last = _value(m["last"], f, text)
    if f is _DOW and last == 0 and first > 0 and not m["last"].isdigit():
        last = 7  # FRI-SUN: Sunday ends a named range as 7
    if first <= last:
        return list(range(first, last + 1, step))
    suggestion = _wrap_suggestion(m["first"], m["last"], f)
    problems.append(f"range {m['base']!r} in the {f.name} field runs backwards; write {suggestion!r} instead")
    return None


def _days(base: str, text: str, problems: list[str]) -> list[int]:
    """Weekdays (0-6) of the base of a ``#`` item: ``*``, a day, or a range (wrapped if backwards)."""
    m = _ITEM.match(base)
    if m is None:
        raise NotCron(f"{base!r} is not a valid day-of-week value")
    values = _values(m, _DOW, text, problems)
    if values is None:  # backwards, e.g. FRI-MON#2: Friday to Saturday, then Sunday to Monday
        first, last = _value(m["first"], _DOW, text), _value(m["last"], _DOW, text)
        values = list(range(first, last + 8)) if first < 7 else list(range(0, last + 1))
    return sorted({v % 7 for v in values})


def _read_field(text: str, f: _Field, problems: list[str]) -> _Part:
    out = _Part()
    if not text:
        raise NotCron(f"empty {f.name} field")
    for raw in text.split(","):
        if not raw:
            raise NotCron(f"empty list item in {text!r} ({f.name} field)")
        item = raw.upper()
        if item.startswith("?"):
            item = "*" + item[1:]  # `?` is `*`, in any field (cron-parser)
        if f is _DOW and (nth := _NTH.match(item)):
            n = int(nth["nth"])
            if not 1 <= n <= 5:
                raise NotCron(f"{raw!r}: the occurrence after # must be 1 to 5")
            days = _days(nth["base"], text, problems)
            base = str(days[0]) if len(days) == 1 and nth["base"] != "*" else nth["base"]
            out.items.append(f"{base}#{n}")
            out.special += [f"{d}#{n}" for d in days]
            out.all_steps = False
            continue
        if f is _DOW and (last := _LAST_DOW.match(item)):
            day = _value(last["a"] or last["b"], f, text) % 7
            out.items.append(f"{day}L")
            out.special.append(f"L{day}")  # croniter's spelling
            out.all_steps = False
            continue
        if f is _DOM and item == "L":
            out.items.append("L")
            out.plain.append("L")
            out.all_steps = False
            continue
        if f is _DOM and (nearest := _NEAREST.match(item)):
            day = int(nearest["a"] or nearest["b"])
            if not 1 <= day <= 31:
                raise NotCron(f"{raw!r}: the day before W must be 1 to 31")
            out.items.append(f"{day}W")
            out.special.append(f"{day}W")  # croniter takes one W per field
            out.all_steps = False
            continue
        m = _ITEM.match(item)
        if not m:
            raise NotCron(f"{raw!r} is not a valid {f.name} value")
        values = _values(m, f, text, problems)
        if m["step"] is None or (m["last"] is not None and values is not None and len(values) == 1):
            out.all_steps = m["base"] == "*" and out.all_steps  # 3-3/2 is 3, not a step
        out.items.append(_norm_item(raw, m, f, values))
        if values is None:  # backwards: croniter wraps it, as it always did
            out.plain.append(item)
        elif f is _DOW and m[0] != "*":  # croniter's range is 0-6: write the days out
            out.plain += [str(v) for v in sorted({v % 7 for v in values})]
        elif len(values) == 1:  # 9-9, 59/15: croniter reads these as the whole cycle
            out.plain.append(str(values[0]))
        else:
            out.plain.append(out.items[-1])
    return out


def _norm_item(raw: str, m: re.Match[str], f: _Field, values: list[int] | None) -> str:
    """The item as cron-descriptor should read it: ? -> *, a range of one value -> the value,
    a day-of-week step -> its days, a-L -> a-31, and otherwise as written."""
    if m["last"] is not None and values is not None and len(values) == 1:
        return raw.split("-")[0]  # 9-9, MON-MON/2 -> 9, MON
    if f is _DOW and m["step"] is not None and values is not None:
        return ",".join(str(v) for v in sorted({v % 7 for v in values}))
    base = "*" if raw.startswith("?") else raw.split("/")[0]
    if m["last"] == "L":
        base = f"{m['first']}-31"
    return base if m["step"] is None else f"{base}/{m['step']}"


@lru_cache(maxsize=4096)
def read(text: str) -> Reading:
    """Read a whitespace-normalised expression; raise `NotCron` saying what is wrong."""
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise NotCron(f"unknown macro {text!r}; use one of {', '.join(sorted(MACROS))}")
        inner = read(MACROS[macro])
        return Reading(macro, inner.seconds_first, inner.arms, inner.repeating_hour, ())
    fields = text.split(" ")
    if len(fields) not in (5, 6):
        raise NotCron(
            f"must have 5 fields (minute hour day month weekday) or 6 with seconds first, got {len(fields)} in {text!r}"
        )
    for part in ",".join(fields).split(","):
        if _HASHED.match(part):
            raise NotCron(f"hashed or random values ({part!r}) are not supported")
    seconds_first = len(fields) == 6
    six = fields if seconds_first else ["0", *fields]
    problems: list[str] = []
    try:
        sec, minute, hour, dom, month, dow = (_read_field(t, f, problems) for t, f in zip(six, _FIELDS6, strict=True))
    except NotCron as e:
        raise NotCron(f"{text!r} is not a valid cron expression: {e}") from None
    dom_parts = ([",".join(dom.plain)] if dom.plain else []) + dom.special
    dow_parts = ([",".join(dow.plain)] if dow.plain else []) + ([",".join(dow.special)] if dow.special else [])
    days: list[tuple[str, str]] = []
    if six[3] not in ("*", "?"):
        days += [(d, "*") for d in dom_parts]
    if six[5] not in ("*", "?"):
        days += [("*", w) for w in dow_parts]
    times = [",".join(p.plain) for p in (sec, minute, hour)]
    if not seconds_first:
        times = times[1:]
    arms = tuple(" ".join([*times, d, ",".join(month.plain), w]) for d, w in days or [("*", "*")])
    normalised = [",".join(p.items) for p in (sec, minute, hour, dom, month, dow)]
    expr = " ".join(normalised if seconds_first else normalised[1:])
    return Reading(expr, seconds_first, arms, hour.all_steps, tuple(problems))
