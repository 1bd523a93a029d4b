"""What the chaos soak (`bench.chaos`) writes down while it runs, and the reconciliation at its end.

The `Ledger` keeps, for every trigger (by job id ``{workspace}:{trigger id}``), its *eras*: the cron
in force from the call that set it (registration, an add, a rescheduling PATCH) to the call that
ended it (a removal or a rescheduling PATCH), each call as (started, returned) wall-clock times; and
every disruptive event (a process killed, frozen, terminated, exited by itself; Redis restarted).

`reconcile` then puts every *due* firing into exactly one class:

* ``once`` / ``more_than_once`` (a duplicate, each with the events that explain it, or none);
* ``missed`` (a ``missed`` record; explained only within an outage, per MISFIRE_GRACE_SECONDS);
* ``other_record`` (skipped, failed, blocked, retrying: the record says why);
* ``dropped_by_change`` (no record, never sent, and its trigger was removed or rescheduled after
  the due time: a firing not started when a change returns is dropped unsent, by design, and a
  dropped firing leaves no record; see scheduler_api.storage.history);
* ``pending`` (still in a batch, the outbox or the retries when the run ended);
* ``lost``: due, no record, never sent, nowhere: must be 0.

A firing is *due* when its due time lies in the measured window and in an era, more than `EDGE`
seconds from the calls that began and ended the era (at an edge a firing may or may not be due:
it is not counted, but its arrivals are still checked for duplicates and for being sent after a
removal). ``sent_after_removal`` lists every arrival of a firing of a removed (or rescheduled)
trigger, due before the change, that arrived after the change's call returned: must be 0.

Failure rules: nothing here raises on odd input; a receiver record whose Idempotency-Key is not a
firing id is counted as ``unknown_arrivals``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler_api import cron as cronlib

EDGE = 1.5  # seconds either side of a change's call in which a due time is not counted
DUP_SLACK = 1.0  # an event this long before a duplicate's first arrival still explains it


@dataclass
class Era:
    """One schedule of one trigger, from the call that set it to the call that ended it."""

    cron: str
    begun: tuple[float, float]  # (call started, call returned)
    ended: tuple[float, float] | None = None
    how: str = ""  # "removed" or "rescheduled" once ended


@dataclass(frozen=True)
class Event:
    """A disruption: `kind` is kill, freeze, term, exit (by itself) or redis; [start, end] its span."""

    kind: str
    process: str
    start: float
    end: float

    def describe(self) -> str:
        span = f"{self.end - self.start:.1f} s " if self.end > self.start else ""
        return f"{self.kind} {self.process} at {cronlib.iso(round(self.start, 3))} {span}".strip()


@dataclass
class Ledger:
    eras: dict[str, list[Era]] = field(default_factory=lambda: defaultdict(list))
    events: list[Event] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)

    def begin(self, job_id: str, cron: str, call: tuple[float, float]) -> None:
        self.eras[job_id].append(Era(cron, call))

    def end(self, job_id: str, call: tuple[float, float], how: str) -> None:
        era = self.eras[job_id][-1]
        if era.ended is None:
            era.ended, era.how = call, how

    def outages(self, *, kinds: Iterable[str] = ("redis",)) -> list[tuple[float, float]]:
        wanted = set(kinds)
        return [(e.start, e.end) for e in self.events if e.kind in wanted]


def due_times(cron: str, start: float, end: float, memo: dict[tuple[str, float, float], list[float]]) -> list[float]:
    """The due times of `cron` (UTC) in (start, end], memoised per expression and window."""
    key = (cron, start, end)
    if key not in memo:
        parsed = cronlib.parse(cron)
        out: list[float] = []
        t = parsed.next_after(start)
        while t <= end:
            out.append(t)
            t = parsed.next_after(t)
        memo[key] = out
    return memo[key]


def split_key(key: str) -> tuple[str, float] | None:
    """``ws:t3@2026-12-04T12:00:05Z`` -> (``ws:t3``, its due time); None when it is not a firing id."""
    job_id, sep, when = key.rpartition("@")
    if not sep or ":" not in job_id:
        return None
    try:
        return job_id, datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Reconciliation:
    counts: dict[str, int]
    duplicates: list[dict[str, Any]]
    sent_after_removal: list[dict[str, Any]]
    missed: list[dict[str, Any]]
    lost: list[str]
    pending: list[str]
    other_records: dict[str, int]

    @property
    def unexplained_duplicates(self) -> int:
        return sum(1 for d in self.duplicates if not d["explained_by"])

    @property
    def unexplained_missed(self) -> int:
        return sum(1 for m in self.missed if not m["in_outage"])

    def as_dict(self, *, limit: int = 50) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "unexplained_duplicates": self.unexplained_duplicates,
            "unexplained_missed": self.unexplained_missed,
            "other_records": self.other_records,
            "duplicates_by_event": dict(
                Counter(d["explained_by"][0] if d["explained_by"] else "" for d in self.duplicates)
            ),
            "duplicates": self.duplicates[:limit],
            "sent_after_removal": self.sent_after_removal[:limit],
            "missed": self.missed[:limit],
            "lost": self.lost[:limit],
            "pending": self.pending[:limit],
        }


def reconcile(
    ledger: Ledger,
    *,
    arrivals: Mapping[str, list[float]],
    records: Mapping[str, str],
    pending: set[str],
    window: tuple[float, float],
    drop_window: float,
    misfire_grace: float,
) -> Reconciliation:
    """Classify every due firing (module docstring). `arrivals`: Idempotency-Key -> arrival times;
    `records`: firing id -> its record's outcome; `pending`: firing ids in batches or retries;
    `window`: the due times counted; `drop_window`: how long before a removal or reschedule a firing
    not yet sent may still have been dropped by it (a delivery timeout plus a lease, and more)."""
    memo: dict[tuple[str, float, float], list[float]] = {}
    counts: Counter[str] = Counter()
    other: Counter[str] = Counter()
    duplicates: list[dict[str, Any]] = []
    missed: list[dict[str, Any]] = []
    lost: list[str] = []
    still: list[str] = []
    outages = ledger.outages()
    lo, hi = window
    for job_id, eras in ledger.eras.items():
        for era in eras:
            first = max(lo, era.begun[1] + EDGE)
            last = min(hi, era.ended[0] - EDGE) if era.ended else hi
            if last <= first:
                continue
            for due in due_times(era.cron, first, last, memo):
                fid = f"{job_id}@{cronlib.iso(due)}"
                seen = arrivals.get(fid)
                if seen:
                    if len(seen) == 1:
                        counts["once"] += 1
                        continue
                    counts["more_than_once"] += 1
                    duplicates.append(_duplicate(fid, due, sorted(seen), ledger.events))
                    continue
                outcome = records.get(fid)
                if outcome == "missed":
                    counts["missed"] += 1
                    explained = any(s - misfire_grace - 2 <= due <= e + 2 for s, e in outages)
                    missed.append({"firing": fid, "in_outage": explained})
                elif outcome is not None:
                    counts["other_record"] += 1
                    other[outcome] += 1
                elif fid in pending:
                    counts["pending"] += 1
                    still.append(fid)
                elif era.ended is not None and due >= era.ended[0] - drop_window:
                    counts["dropped_by_change"] += 1
                else:
                    counts["lost"] += 1
                    lost.append(fid)
    counts["due"] = sum(v for k, v in counts.items() if k != "due")
    after, unknown = _sent_after_removal(ledger, arrivals)
    counts["sent_after_removal"] = len(after)
    counts["unknown_arrivals"] = unknown
    for key in ("once", "more_than_once", "missed", "other_record", "dropped_by_change", "pending", "lost"):
        counts.setdefault(key, 0)
    return Reconciliation(dict(counts), duplicates, after, missed, lost, still, dict(other))


def _duplicate(fid: str, due: float, seen: list[float], events: list[Event]) -> dict[str, Any]:
    lo, hi = seen[0] - DUP_SLACK, seen[-1]
    why = [e.describe() for e in events if e.kind != "term" and e.start <= hi and e.end >= lo]
    return {
        "firing": fid,
        "arrivals": [round(t - due, 3) for t in seen],  # seconds after the due time
        "explained_by": why,
    }


def _sent_after_removal(ledger: Ledger, arrivals: Mapping[str, list[float]]) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    unknown = 0
    for key, seen in arrivals.items():
        parsed = split_key(key)
        if parsed is None:
            unknown += len(seen)
            continue
        job_id, due = parsed
        for era in ledger.eras.get(job_id, ()):
            if era.ended is None or not era.begun[0] - EDGE <= due < era.ended[0]:
                continue
            late = [t for t in seen if t > era.ended[1]]
            if late:
                out.append(
                    {
                        "firing": key,
                        "how": era.how,
                        "change_returned": cronlib.iso(round(era.ended[1], 3)),
                        "arrived_after_s": [round(t - era.ended[1], 3) for t in late],
                    }
                )
            break
    return out, unknown
