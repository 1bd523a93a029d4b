"""Warnings about schedules that are valid but may not do what their author expects.

The dry run and the writes of triggers answer them beside the result (issue "Trigger identity and
editing"). `schedule_warnings` returns ``{"path", "code", "message"}`` details: ``path`` is the one the
caller gives with each trigger (``triggers[2]``, ``trigger``), or ``triggers`` for a workspace-wide rule.
The rules, over the `HORIZON_DAYS` (366) days after `now`:

* ``dst_skipped``: the trigger's zone jumps forward and the cron matches a wall-clock time in the gap;
  the DST policy of `scheduler_api.cron` fires such times once, at the first instant after the jump.
* ``dst_repeated``: the zone goes back and the cron matches a wall-clock time of the repeated interval;
  a fixed hour fires once, in the first occurrence; a ``*`` or step hour fires in both.
  Both DST rules give one warning per transition, naming its date; a UTC trigger never gets them.
* ``overlap_risk``: two consecutive runs (of those read, see Bounds) are closer than one firing can last
  at worst (`DeliveryPolicy.worst_case_seconds`, with the trigger's own ``timeout_seconds`` and
  ``retry`` where it sets them): two firings of the trigger can be in flight at once. With an
  ``overlap`` of ``skip`` or ``buffer_one`` the warning stays (firings will be skipped or delayed:
  the schedule is still denser than the target) and its message says what the policy does.
* ``rare``: fewer than two runs; the message gives the next run.
* ``burst`` (path ``triggers``): more than `BURST_LIMIT` triggers due in the same second to the same
  host (lower-cased, any port), comparing the first `BURST_RUNS` runs of each.

One-off triggers (``at``, no cron) get none of these.
Disabled triggers are warned about like enabled ones, and count towards a burst: a warning describes
the schedule as written, which is what fires once the trigger is enabled.

Bounds: each distinct (cron, zone) is computed once per call, however many triggers share it. Its runs
are read up to the horizon or `MAX_RUNS`; when a call holds many distinct schedules they share
`RUN_BUDGET` runs (never fewer than `MIN_RUNS` each), so an overlap that shows only later is not
reported. A DST transition the runs read already cover costs nothing more, else two or three run
lookups. A zone's offset is sampled every 6 hours (an offset undone within 6 hours is not seen).
A cron that `scheduler_api.cron` cannot compute (`CronError`) gets no warning: this never raises it.
Run times come only from cron.py's public API, which applies the DST policy; whether a cron matches a
wall-clock time in a gap is asked of the cron read in UTC, on wall-clock seconds counted as UTC.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from scheduler_api.cron import Cron, CronError, iso, parse
from scheduler_api.triggers import Trigger

if TYPE_CHECKING:
    from scheduler_api.settings import Settings

HORIZON_DAYS = 366
MAX_RUNS = 500  # runs read per distinct schedule at most
RUN_BUDGET = 10_000  # runs read per call, shared by the distinct schedules (0.5-1 s of cron.py)
MIN_RUNS = 10  # runs read per distinct schedule at least, whatever the budget
BURST_RUNS = 3
BURST_LIMIT = 100
_SAMPLE = 6 * 3600  # seconds between two readings of a zone's offset

Detail = dict[str, str]


@dataclass(frozen=True)
class DeliveryPolicy:
    """How long one firing may take: each attempt's timeout, the retries after the first attempt,
    and the backoff base (retry n waits up to ``backoff_seconds * 2**(n-1)``, at most
    ``max_backoff_seconds``)."""

    timeout_seconds: float
    max_retries: int
    backoff_seconds: float
    max_backoff_seconds: float = 3600.0  # the DELIVERY_MAX_BACKOFF_SECONDS default

    def __post_init__(self) -> None:
        if self.timeout_seconds <= 0 or self.max_retries < 0 or self.backoff_seconds < 0:
            raise ValueError(f"timeout must be > 0, retries and backoff >= 0, got {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            settings.delivery_timeout_seconds,
            settings.delivery_max_retries,
            settings.delivery_backoff_seconds,
            settings.delivery_max_backoff_seconds,
        )

    def of_trigger(self, trigger: Trigger) -> DeliveryPolicy:
        """This policy with the trigger's own ``timeout_seconds`` and ``retry`` keys where it sets them."""
        own = {"timeout_seconds": trigger.timeout_seconds, **(trigger.retry.model_dump() if trigger.retry else {})}
        given = {name: value for name, value in own.items() if value is not None}
        return replace(self, **given) if given else self

    @property
    def backoff_total(self) -> float:
        """The backoffs between the attempts, each at the top of its jitter and within the cap."""
        return sum(min(self.backoff_seconds * (1 << n), self.max_backoff_seconds) for n in range(self.max_retries))

    @property
    def worst_case_seconds(self) -> float:
        """Every attempt times out and every backoff is at its longest."""
        return self.timeout_seconds * (self.max_retries + 1) + self.backoff_total


@dataclass(frozen=True)
class _Shift:
    """A change of a zone's offset: `at` is the first second of the new one (offsets east of UTC)."""

    at: int
    before: int
    after: int
    zone: ZoneInfo


@dataclass
class _Schedule:
    """The runs of one (cron, zone) read once per call, and its DST warnings."""

    cron: Cron
    now: float
    runs: list[float]  # the first runs after `now`, none beyond the horizon
    covered: float  # every run in (now, covered] is in `runs`
    beyond: float | None  # the first run after the horizon, when the read reached it
    gap: tuple[float, float] | None  # the shortest gap between two of the runs, and its first run
    dst: list[tuple[str, str]]  # (code, message)


def schedule_warnings(
    items: Sequence[tuple[str, Trigger]],
    *,
    now: float,
    policy: DeliveryPolicy | Callable[[Trigger], DeliveryPolicy],
) -> list[Detail]:
    """The warnings of `items`, (path, trigger) pairs: each trigger's in item order, then the bursts.
    `policy` is the defaults (each trigger's own timeout and retries applied over them,
    `DeliveryPolicy.of_trigger`), or a function giving each trigger's policy."""
    horizon = now + HORIZON_DAYS * 86_400
    crons: dict[int, Cron] = {}
    for i, (_, trigger) in enumerate(items):
        if trigger.cron is None:
            continue  # a one-off
        try:
            crons[i] = parse(trigger.cron, trigger.timezone or "UTC")
        except CronError:
            continue
    cap = min(MAX_RUNS, max(MIN_RUNS, RUN_BUDGET // max(1, len({(c.expr, c.tz) for c in crons.values()}))))
    schedules: dict[tuple[str, str], _Schedule | None] = {}
    shifts: dict[str, list[_Shift]] = {}
    due: dict[tuple[int, str], list[str]] = defaultdict(list)
    out: list[Detail] = []
    for i, (path, trigger) in enumerate(items):
        if i not in crons:
            continue
        cron = crons[i]
        key = (cron.expr, cron.tz)
        if key not in schedules:
            if cron.tz != "UTC" and cron.tz not in shifts:
                shifts[cron.tz] = _shifts(ZoneInfo(cron.tz), now, horizon)
            schedules[key] = _read(cron, trigger.cron or cron.expr, now, horizon, cap, shifts.get(cron.tz, []))
        schedule = schedules[key]
        if schedule is None:
            continue
        out.extend({"path": path, "code": code, "message": message} for code, message in schedule.dst)
        trigger_policy = policy.of_trigger(trigger) if isinstance(policy, DeliveryPolicy) else policy(trigger)
        overlap = _overlap(schedule.gap, trigger_policy, trigger.overlap or "allow")
        if overlap:
            out.append({"path": path, "code": "overlap_risk", "message": overlap})
        if len(schedule.runs) < 2 and schedule.beyond is not None:
            out.append({"path": path, "code": "rare", "message": _rare(schedule.runs, schedule.beyond)})
        host = urlsplit(trigger.url).hostname
        if host:
            for run in schedule.runs[:BURST_RUNS]:
                due[(int(run), host.lower())].append(path)
    return out + _bursts(due)


def _read(cron: Cron, text: str, now: float, horizon: float, cap: int, shifts: list[_Shift]) -> _Schedule | None:
    """Up to `cap` runs of `cron` after `now` and its DST warnings; None when cron.py cannot compute them."""
    runs: list[float] = []
    beyond = None
    try:
        ts = now
        while len(runs) < cap:
            ts = cron.next_after(ts)
            if ts > horizon:
                beyond = ts
                break
            runs.append(ts)
        gap = min(((b - a, a) for a, b in zip(runs, runs[1:], strict=False)), default=None)
        schedule = _Schedule(cron, now, runs, horizon if beyond is not None else runs[-1], beyond, gap, [])
        for shift in shifts:
            note = _skipped(schedule, shift, text) if shift.after > shift.before else _repeated(schedule, shift)
            if note:
                schedule.dst.append(note)
    except CronError:
        return None
    return schedule


def _first_run(schedule: _Schedule, lo: int, hi: int) -> float | None:
    """The first run in [lo, hi), from the runs read where they cover the span, else from cron.py."""
    if schedule.now < lo and hi - 1 <= schedule.covered:
        i = bisect_left(schedule.runs, lo)
        return schedule.runs[i] if i < len(schedule.runs) and schedule.runs[i] < hi else None
    run = schedule.cron.next_after(lo - 1)  # run times are whole seconds
    return run if run < hi else None


def _skipped(schedule: _Schedule, shift: _Shift, text: str) -> tuple[str, str] | None:
    """dst_skipped, when the cron matches a wall-clock time of the gap: such a time fires at `shift.at`."""
    if _first_run(schedule, shift.at, shift.at + 1) is None:
        return None
    start, end = shift.at + shift.before, shift.at + shift.after  # the gap on the wall clock, as UTC
    wall = parse(text, "UTC")
    first = wall.next_after(start - 1)
    if first >= end:
        return None  # the run is the cron's own time right after the gap
    if wall.next_after(first) >= end:
        what = f"its {_clock(first)} does not exist that day, so it fires once"
    else:
        what = f"its times from {_clock(first)} until {_clock(end)} do not exist that day, so they fire once, together,"
    return "dst_skipped", (
        f"{_head(shift)} clocks jump forward {_duration(end - start)}, from {_clock(start)} to {_clock(end)}: "
        f"{what} at {iso(shift.at)} ({_local(shift.at, shift.zone)}), right after the jump"
    )


def _repeated(schedule: _Schedule, shift: _Shift) -> tuple[str, str] | None:
    """dst_repeated, when the cron runs in the first occurrence of the repeated interval."""
    back = shift.before - shift.after
    first = _first_run(schedule, shift.at - back, shift.at)
    if first is None:
        return None
    start, end = _clock(shift.at + shift.after), _clock(shift.at + shift.before)
    head = f"{_head(shift)} clocks go back {_duration(back)}, so {start}-{end} happens twice"
    again = _first_run(schedule, shift.at, shift.at + back)
    if again is not None:
        return "dst_repeated", (
            f"{head}: its hour is * or a step, so it fires in both occurrences, from {_local(first, shift.zone)} "
            f"({iso(first)}) and again from {_local(again, shift.zone)} ({iso(again)})"
        )
    zone_name = datetime.fromtimestamp(first, shift.zone).tzname()
    if _first_run(schedule, int(first) + 1, shift.at) is None:
        when = f"once, at the first {_local(first, shift.zone, named=False)} ({zone_name}, {iso(first)})"
    else:
        when = (
            f"only in the first occurrence ({zone_name}), from {_local(first, shift.zone, named=False)} ({iso(first)})"
        )
    return "dst_repeated", f"{head}: its hour is fixed, so it fires {when}"


_OVERLAP_HANDLED = {
    "skip": "its overlap policy skip will skip a firing due while another is active",
    "buffer_one": "its overlap policy buffer_one will delay a firing due while another is active (skip any more)",
}


def _overlap(shortest: tuple[float, float] | None, policy: DeliveryPolicy, mode: str) -> str | None:
    worst = policy.worst_case_seconds
    if shortest is None or shortest[0] >= worst:
        return None
    gap, at = shortest
    head = (
        f"runs as little as {_duration(gap)} apart ({iso(at)} and {iso(at + gap)}), but one firing can take up to "
        f"{_duration(worst)} ({policy.timeout_seconds:g} s timeout x {policy.max_retries + 1} attempts + "
        f"{policy.backoff_total:g} s of backoff between them): "
    )
    what = _OVERLAP_HANDLED.get(mode, "two firings of it can be in flight at once")
    return head + f"{what}; space the runs further apart or lower the timeout or retries"


def _rare(runs: list[float], beyond: float) -> str:
    if not runs:
        return f"never fires in the next {HORIZON_DAYS} days; its next run is at {iso(beyond)}"
    return f"fires only once in the next {HORIZON_DAYS} days, at {iso(runs[0])}; the run after is at {iso(beyond)}"


def _bursts(due: dict[tuple[int, str], list[str]]) -> list[Detail]:
    """One burst warning per host, naming its earliest crowded second."""
    crowded: dict[str, list[tuple[int, list[str]]]] = defaultdict(list)
    for (second, host), paths in due.items():
        if len(paths) > BURST_LIMIT:
            crowded[host].append((second, paths))
    out = []
    for host, seconds in sorted(crowded.items(), key=lambda item: (min(item[1])[0], item[0])):
        second, paths = min(seconds)
        named = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        others = f" (and in {len(seconds) - 1} more such seconds)" if len(seconds) > 1 else ""
        message = (
            f"{len(paths)} triggers send to {host} in the same second, at {iso(second)}{others}: {named}; more "
            f"than {BURST_LIMIT} requests at once can overload the host or be throttled by it, so spread their "
            "times over a few seconds or minutes"
        )
        out.append({"path": "triggers", "code": "burst", "message": message})
    return out


def _shifts(zone: ZoneInfo, now: float, horizon: float) -> list[_Shift]:
    """The zone's offset changes in (now, horizon], each found to the second."""

    def offset(ts: int) -> int:
        return int((datetime.fromtimestamp(ts, zone).utcoffset() or timedelta()).total_seconds())

    found = []
    lo, end = int(now), int(horizon)
    lo_offset = offset(lo)
    while lo < end:
        hi = min(lo + _SAMPLE, end)
        hi_offset = offset(hi)
        if hi_offset != lo_offset:
            a, b = lo, hi
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == lo_offset else (a, mid)
            found.append(_Shift(b, lo_offset, offset(b), zone))
        lo, lo_offset = hi, hi_offset
    return found


def _head(shift: _Shift) -> str:
    local = datetime.fromtimestamp(shift.at, shift.zone)
    return f"on {local.date().isoformat()} in {shift.zone.key},"


def _clock(wall: float) -> str:
    """A wall-clock time given as seconds counted as UTC: 02:30, or 02:30:15."""
    moment = datetime.fromtimestamp(wall, UTC)
    return f"{moment:%H:%M}" if moment.second == 0 else f"{moment:%H:%M:%S}"


def _local(ts: float, zone: ZoneInfo, *, named: bool = True) -> str:
    """The local time of an instant: 01:30 EDT (01:30 when not `named`)."""
    local = datetime.fromtimestamp(ts, zone)
    clock = _clock(ts + (local.utcoffset() or timedelta()).total_seconds())
    return f"{clock} {local.tzname()}" if named else clock


def _duration(seconds: float) -> str:
    """1 s, 2 min 7 s, 1 h, 3 d 4 h (two units at most; fractions of a second below a minute)."""
    if seconds < 60:
        return f"{seconds:g} s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count} {unit}")
    return " ".join(parts[:2])
