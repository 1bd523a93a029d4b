"""The one place that parses cron expressions and computes run times (croniter).

Accepted forms:
  * five fields, ``minute hour day-of-month month day-of-week`` (``0 9 * * 1-5``);
  * six fields with **seconds first**, as the original (BullMQ) read them (``*/10 * * * * *``);
  * the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``.
Names (``JAN``, ``MON``), ranges, lists, steps and croniter's ``L``, ``W`` and ``#`` are accepted.
Rejected: seven fields (years), croniter's hashed/random ``H``/``R`` values (they would fire at
times nobody wrote down) and expressions that never match (``0 0 31 2 *``).

All times are UTC unix timestamps (floats). The validation, the API's previews and the
scheduler all go through `parse` and `next_after`, so the API never accepts what the scheduler
cannot run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from croniter import CroniterError, croniter

_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_HASHED = re.compile(r"^[HR](\(|/|$)", re.IGNORECASE)


class CronError(ValueError):
    """The expression is not one we can schedule; the message says why."""


@dataclass(frozen=True)
class Cron:
    """A validated cron expression."""

    expr: str
    seconds_first: bool

    def next_after(self, ts: float) -> float:
        """The first run time strictly after `ts` (unix seconds, UTC)."""
        return _next_after(self.expr, self.seconds_first, ts)

    def last_at_or_before(self, ts: float) -> float:
        """The latest run time at or before `ts` (croniter's get_prev is strictly before its start,
        and run times are whole seconds)."""
        it = croniter(self.expr, math.floor(ts) + 1, ret_type=float, second_at_beginning=self.seconds_first)
        return float(it.get_prev(float))

    def next_runs(self, ts: float, count: int) -> list[float]:
        out: list[float] = []
        for _ in range(count):
            ts = self.next_after(ts)
            out.append(ts)
        return out


@lru_cache(maxsize=65_536)
def _next_after(expr: str, seconds_first: bool, ts: float) -> float:
    # Memoised: in a tick, thousands of triggers share a few expressions and the same due time.
    it = croniter(expr, ts, ret_type=float, second_at_beginning=seconds_first)
    return float(it.get_next(float))


@lru_cache(maxsize=4096)
def parse(expr: str) -> Cron:
    """Validate `expr` and return a `Cron`; raise `CronError` saying what is wrong."""
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
    cron = Cron(normalized, seconds_first)
    try:
        cron.next_after(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    except (CroniterError, ValueError, OverflowError) as e:
        raise CronError(f"{text!r} never matches a real date") from e
    return cron


def iso(ts: float) -> str:
    """ISO 8601 UTC with a `Z`, milliseconds only when the time has them."""
    dt = datetime.fromtimestamp(ts, UTC)
    if dt.microsecond:
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")
