"""Replays (README "Replay"): a recorded firing sent again as itself.

`replay` (one firing) and `replay_matching` (the records a filter selects) put firings into a new
batch in the outbox, as run now does (scheduler_api.storage.firings.enqueue_now); the scheduler's
next tick pushes it. A replayed firing keeps:

* its id, scheduled time and so its Idempotency-Key, and carries its replay's number
  (`Firing.replay`: 1 for the first replay of that firing, sent as ``X-Scheduler-Replay``);
* the record's attempts, its own numbered on after them (`Firing.first` is its first);

and is sent with its trigger's *current* definition: the firing takes the definition's version, so
the worker sends it where it drops an old firing of a replaced trigger. Its outcomes are written to
the same record, which gains the new attempts, the new outcome and ``replays`` (the record script,
``lua/record.lua``), and moves to the retention set of its new outcome. A replay whose trigger
is replaced or removed before it is sent is dropped and leaves the record as it was.

Which records are replayed: any with a final outcome (delivered, failed, blocked, missed, skipped)
whose trigger still exists. Refused, nothing enqueued (`Answer`): no record of the firing in the
workspace (NONE); its trigger removed (GONE); the firing in progress, retrying or a replay of it not
finished (PENDING); its trigger has an overlap rule (skip, buffer_one) and an active firing (ACTIVE).
Under an overlap rule the replay becomes the trigger's active firing until its final outcome, as a
scheduled one does, so the trigger's firings due meanwhile are skipped or wait. The checks and the
enqueue are one script (``lua/replay.lua``), a compare-and-set on the record and the definition read:
two replays of one firing at once, exactly one is enqueued.

Failure rule: Redis being unreachable, slow or refusing is raised as `StoreUnavailable` (the API
answers 503); one that timed out may have enqueued the replay.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis import Redis

from scheduler_api.storage import keys, scripts
from scheduler_api.storage.firings import Firing
from scheduler_api.storage.history import OutcomeKind, Record
from scheduler_api.storage.redis_util import redis_errors
from scheduler_api.storage.triggers import StoredTrigger, load_definitions

# How many times `replay` reads again a record or definition that changed while it was replayed.
CHANGED_TRIES = 3
# Records read per round trip while `replay_matching` looks for matches.
PAGE = 500


class Answer(Enum):
    """What became of one firing asked to be replayed (module docstring)."""

    REPLAYED = "ok"
    NONE = "none"
    GONE = "gone"
    PENDING = "pending"
    ACTIVE = "active"
    CHANGED = "changed"  # the record or definition changed since read (`replay` reads them again)


@dataclass(frozen=True)
class Replayed:
    """The answer about one firing, and its replay's number when REPLAYED."""

    answer: Answer
    number: int = 0


@dataclass(frozen=True)
class Matched:
    """What `replay_matching` did: replayed, and matching records it skipped (any other answer)."""

    replayed: int
    skipped: int


def has_record(conn: Redis, workspace_id: str, firing_id: str) -> bool:
    """Whether the workspace holds a record of `firing_id` (a firing of another workspace: no)."""
    if keys.workspace_of_firing(firing_id) != workspace_id:
        return False
    with redis_errors():
        return bool(conn.hexists(keys.records(workspace_id), firing_id))


def replay(conn: Redis, workspace_id: str, firing_id: str, *, now: float | None = None) -> Replayed:
    """Replay one firing of the workspace (module docstring), reading it again while it changes."""
    if keys.workspace_of_firing(firing_id) != workspace_id:
        return Replayed(Answer.NONE)
    out = Replayed(Answer.CHANGED)
    for _ in range(CHANGED_TRIES):
        with redis_errors():
            raw = conn.hget(keys.records(workspace_id), firing_id)
        if raw is None:
            return Replayed(Answer.NONE)
        [out] = _enqueue(conn, workspace_id, [(firing_id, raw)], now=now)
        if out.answer is not Answer.CHANGED:
            return out
    return out


def replay_matching(
    conn: Redis,
    workspace_id: str,
    *,
    outcome: str,
    trigger: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    now: float | None = None,
) -> Matched:
    """Replay up to `limit` records of the workspace with `outcome`, of trigger id `trigger` and
    scheduled in [`since`, `until`] when given, newest scheduled time first; the others that match
    but are refused (module docstring) are counted as skipped."""
    history_key, records_key = keys.history(workspace_id), keys.records(workspace_id)
    job_id = keys.job_id(workspace_id, trigger) if trigger is not None else None
    found: list[tuple[str, bytes | str]] = []
    with redis_errors():
        ids: list[bytes] = conn.zrevrangebyscore(  # type: ignore[assignment]
            history_key, "+inf" if until is None else repr(until), "-inf" if since is None else repr(since)
        )
        for start in range(0, len(ids), PAGE):
            page = ids[start : start + PAGE]
            for fid, raw in zip(page, conn.hmget(records_key, page), strict=True):
                if raw is not None and _matches(Record.from_json(raw), outcome, job_id):
                    found.append((_text(fid), raw))
            if len(found) >= limit:
                break
    answers = _enqueue(conn, workspace_id, found[:limit], now=now)
    replayed = sum(a.answer is Answer.REPLAYED for a in answers)
    return Matched(replayed, len(answers) - replayed)


def _matches(record: Record, outcome: str, job_id: str | None) -> bool:
    return record.outcome.value == outcome and (job_id is None or record.job_id == job_id)


def _enqueue(
    conn: Redis, workspace_id: str, found: Sequence[tuple[str, bytes | str]], *, now: float | None
) -> list[Replayed]:
    """Replay the firings of the records `found` (firing id, record JSON as read) in one new batch."""
    if not found:
        return []
    ts = time.time() if now is None else now
    with redis_errors():
        current = load_definitions(conn, sorted({fid.partition("@")[0] for fid, _ in found}))
    planned: list[Replayed] = []  # the answer, or the replay's number when it goes to the script
    args: list[Any] = []
    for fid, raw in found:
        record = Record.from_json(raw)
        trigger = current.get(record.job_id)
        if trigger is None:
            planned.append(Replayed(Answer.GONE))
        elif record.outcome is OutcomeKind.RETRYING:
            planned.append(Replayed(Answer.PENDING))
        else:
            number = (record.replays or 0) + 1
            planned.append(Replayed(Answer.REPLAYED, number))
            args += [fid, trigger.id, trigger.version, raw, _firing(record, trigger, number, ts).to_json(), number]
            args.append("" if trigger.overlap == "allow" else trigger.overlap)
    if not args:
        return planned
    batch_id = uuid.uuid4().hex
    script_keys = [keys.workspace(workspace_id), keys.records(workspace_id), keys.state(workspace_id)]
    script_keys += [keys.batch(batch_id), keys.OUTBOX, keys.METRICS]
    with redis_errors():
        answers = iter(scripts.run(conn, "replay", script_keys, [repr(ts), batch_id, len(args) // 7, *args]))
    out = []
    for p in planned:
        if p.answer is Answer.REPLAYED:
            answer = Answer(_text(next(answers)))
            p = p if answer is Answer.REPLAYED else Replayed(answer)
        out.append(p)
    return out


def _firing(record: Record, trigger: StoredTrigger, number: int, now: float) -> Firing:
    """The replay of `record`'s firing: the trigger's current version, sent now (`send_at`, from which
    the worker measures its lateness), held when the trigger has an overlap rule."""
    first = len(record.attempts) + 1
    return Firing(
        record.id,
        record.job_id,
        trigger.version,
        record.scheduled_at,
        attempt=first,
        attempts=list(record.attempts),
        held=trigger.overlap != "allow",
        send_at=now,
        replay=number,
        first=first,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
