"""Per-minute counters of the last 24 hours, kept in Redis for the dashboard's charts, and the
hourly per-workspace counts of the workspace list.

Keys (scheduler_api.storage.keys), each bounded by its expiry:

* ``sa:series:{minute}`` - one hash per minute (its unix start): outcome kind
  (`history.OutcomeKind`: delivered, failed, blocked, retrying, dropped written by ``record.lua``
  for every outcome a worker stores; missed, skipped by ``commit_due.lua``) -> count, and
  ``l:{le}`` -> how many firings of that minute had a lateness (first attempt's start minus
  scheduled time) up to ``le`` seconds (`LATENESS_BUCKETS`, the buckets of the Prometheus
  histogram; ``l:+Inf`` above them), written by `observe_lateness`. It expires `SERIES_TTL`
  after its last write (a day and a minute).
* ``sa:wsday:{hour}`` - one hash per hour: ``{ws}:d`` / ``{ws}:f`` -> the workspace's delivered /
  failed-or-blocked final outcomes in that hour (``record.lua``); expires `WORKSPACE_DAY_TTL` (25 h)
  after its last write.

The scripts count in Lua locals and write once per kind (and once per workspace) per call, so
their added cost does not grow with the outcomes of a call. ``record.lua`` and ``commit_due.lua``
set the same TTLs as written here (86460 and 90000 seconds).

`read` returns the last `minutes` minutes, oldest first, an empty minute included, with p50 and
p99 lateness estimated from the histogram as Prometheus' ``histogram_quantile`` does (linear within
the bucket that holds the rank; the top bound when it falls in ``+Inf``).

Failure rules: `read` raises Redis being unreachable, slow or refusing as `StoreUnavailable` (503),
and ValueError for `minutes` outside 1..1440. `observe_lateness` only queues commands on the
caller's pipeline: its errors are the pipeline's, raised by its ``execute``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from scheduler_api.storage import keys
from scheduler_api.storage.history import OutcomeKind
from scheduler_api.storage.redis_util import redis_errors

# The Prometheus lateness histogram's buckets (scheduler_api.metrics reads them from here).
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
OUTCOMES = tuple(kind.value for kind in OutcomeKind)
SERIES_TTL = 86_460  # a day and a minute after the minute's last write (record.lua, commit_due.lua)
WORKSPACE_DAY_TTL = 90_000  # 25 hours (record.lua)
MAX_MINUTES = 1440
_LATENESS_PREFIX = "l:"


@dataclass(frozen=True)
class Minute:
    """One minute of the series: its start (unix seconds), counts by outcome kind (every kind of
    `OUTCOMES`, 0 when none) and the lateness p50 / p99 of its firings (None without any)."""

    start: float
    counts: dict[str, int]
    lateness_p50: float | None
    lateness_p99: float | None


def minute_start(now: float) -> int:
    return int(now // 60) * 60


def record_keys(now: float) -> tuple[str, str]:
    """The keys ``record.lua`` counts into at `now`: this minute's series, this hour's workspace counts."""
    return keys.series_minute(minute_start(now)), keys.workspace_day(int(now // 3600) * 3600)


def day_hours(now: float) -> list[int]:
    """The starts of the current hour and the 23 before it: the workspace list's "last 24 h"."""
    hour = int(now // 3600) * 3600
    return [hour - i * 3600 for i in range(24)]


def workspace_fields(workspace_id: str) -> tuple[str, str]:
    """The fields of a workspace's delivered and failed counts in ``sa:wsday:{hour}``."""
    return f"{workspace_id}:d", f"{workspace_id}:f"


def bucket_labels(bounds: Sequence[float]) -> list[str]:
    """The ``le`` label of each bucket of `bounds` (ascending), then ``+Inf``."""
    return [f"{b:g}" for b in bounds] + ["+Inf"]


def bucket_counts(values: Iterable[float], bounds: Sequence[float], labels: Sequence[str]) -> dict[str, int]:
    """How many of `values` fall in each bucket (the first bound not below the value; `labels` from
    `bucket_labels(bounds)`), by label: a binary search per value, nothing formatted."""
    counts: dict[str, int] = {}
    for v in values:
        le = labels[bisect_left(bounds, v)]
        counts[le] = counts.get(le, 0) + 1
    return counts


_LATENESS_LABELS = bucket_labels(LATENESS_BUCKETS)


def observe_lateness(pipe: Pipeline, values: list[float], *, now: float) -> None:
    """Add `values` (seconds late) to the histogram of the minute of `now`: one HINCRBY per bucket
    touched, one EXPIRE."""
    if not values:
        return
    counts = bucket_counts(values, LATENESS_BUCKETS, _LATENESS_LABELS)
    key = keys.series_minute(minute_start(now))
    for le, c in counts.items():
        pipe.hincrby(key, _LATENESS_PREFIX + le, c)
    pipe.expire(key, SERIES_TTL)


def read(conn: Redis, *, now: float, minutes: int = 60) -> list[Minute]:
    """The last `minutes` minutes up to the one of `now` (included), oldest first, in one round trip."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise ValueError(f"minutes must be between 1 and {MAX_MINUTES}, got {minutes}")
    last = minute_start(now)
    starts = [last - (minutes - 1 - i) * 60 for i in range(minutes)]
    with redis_errors():
        pipe = conn.pipeline(transaction=False)
        for start in starts:
            pipe.hgetall(keys.series_minute(start))
        raws: list[dict[bytes, bytes]] = pipe.execute()
    return [_minute(start, raw) for start, raw in zip(starts, raws, strict=True)]


def _minute(start: int, raw: dict[bytes, bytes]) -> Minute:
    counts = dict.fromkeys(OUTCOMES, 0)
    histogram: dict[str, int] = {}
    for field, value in raw.items():
        name = field.decode()
        if name.startswith(_LATENESS_PREFIX):
            histogram[name[len(_LATENESS_PREFIX) :]] = int(value)
        else:
            counts[name] = int(value)
    return Minute(float(start), counts, quantile(histogram, 0.5), quantile(histogram, 0.99))


def quantile(histogram: dict[str, int], q: float, buckets: Sequence[float] = LATENESS_BUCKETS) -> float | None:
    """The `q` quantile of a histogram of non-cumulative bucket counts (``le`` as written by
    `observe_lateness`): linear within its bucket, from 0 for the first; the top bound for ``+Inf``."""
    bounds: Iterable[tuple[float, int]] = [(b, histogram.get(f"{b:g}", 0)) for b in buckets]
    total = sum(histogram.values())
    if not total:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for upper, c in bounds:
        if c and below + c >= rank:
            return lower + (upper - lower) * (rank - below) / c
        below += c
        lower = upper
    return float(buckets[-1])
