"""Firings in Redis: the atomic steps that move them from schedule to queue to outcome.

A firing is one due time of one trigger. Its id is ``{jobId}@{scheduled time ISO}``; its JSON
(`Firing`) travels in a batch hash (``sa:batch:{id}``), one batch per RQ job, and a retry is a
firing JSON in ``sa:retries``. Every step here is one Lua script (``lua/{step}.lua``, run through
scheduler_api.storage.scripts), so each is all-or-nothing:

* `commit_due` (scheduler): for each due trigger, advance its schedule entry from the time it was
  read at to its next time (or remove it: the trigger has ended) *only if nobody else did*
  (compare-and-set on score and version), and add the firing to a batch, or its missed record to
  the history. Two schedulers reading the same due entry: exactly one wins. A jittered firing
  (`Firing.send_at`) goes into a batch of its own send time, in the outbox at that time.
* Overlap (``skip`` / ``buffer_one``) and ``max_firings`` are decided in `commit_due` too, in the
  workspace's state hash (keys.state), so they hold across any number of schedulers and workers.
  A held firing (`Firing.held`) is its trigger's active one from its commit until `record` stores
  its final outcome (delivered, failed, blocked or dropped; retrying keeps it active); a firing due
  meanwhile gets a ``skipped`` record naming the active one, or with ``buffer_one`` waits (one at
  most) and `record` puts it into a new batch when the active one lets go. A killed worker's held
  firing is re-sent once its lease runs out (`reap_leases`), and lets go then. Every firing sent
  or waiting counts toward ``max_firings``; the one that reaches it ends the trigger.
* `move_retries` (scheduler): due retries go into a batch; ZREM decides who moved each one.
* `claim_outbox` (scheduler): a written batch stays in the outbox until a worker takes it: a
  scheduler that dies between writing and pushing leaves it there, pushed 30 s later; one whose
  RQ job ended without a worker taking it (the job failed before, a worker was killed between
  taking the job and claiming the batch, the queue was emptied) is pushed again when the
  scheduler finds that job gone (scheduler_api.engine.outbox.push_outbox).
* leases (scheduler_api.storage.leases; `record` lets go): claiming takes the batch out of the
  outbox; a batch whose worker stopped renewing its lease (killed) goes back to the outbox with
  its undelivered firings.
* `record` (worker): outcomes of finished firings, retries to schedule, retention trimming (per
  workspace, see scheduler_api.storage.history) and the metrics counters, in the same script.
* `enqueue_now` (API, "run now"): one firing outside the schedule, into the outbox (a replay too: storage/replay.py).
* `sweep` (scheduler, in storage.history): retention of workspaces that get no new records.

Failure rules: `enqueue_now`, the API's call, raises Redis being unreachable, slow or refusing as
`StoreUnavailable` (the API answers 503). Every other step raises redis-py's errors unchanged:
the scheduler logs them and ticks again, and a worker's batch job fails, its lease runs out and
`reap_leases` hands its undelivered firings to another worker. A step that fails has changed
nothing (one script); one that timed out may have been applied, and each step is safe to repeat:
the compare-and-set, ZREM and the lease decide again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from redis import Redis

from scheduler_api.storage import keys, scripts, series, workspace_settings
from scheduler_api.storage.counters import Counter
from scheduler_api.storage.history import OutcomeKind, Record
from scheduler_api.storage.history import Retention as Retention  # its home until it moved
from scheduler_api.storage.redis_util import compact_json, redis_errors
from scheduler_api.storage.triggers import StoredTrigger


@dataclass
class Firing:
    """One due time of one trigger, with the attempts made so far."""

    id: str
    job_id: str
    version: str
    scheduled_at: float
    attempt: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # The trigger's overlap rule (skip or buffer_one) held this firing as its active one when it was
    # committed: its final outcome lets go (scheduler_api.storage.firings.record).
    held: bool = False
    # When a jittered firing is sent (its nominal time + its offset); None: at `scheduled_at`.
    send_at: float | None = None
    replay: int = 0  # a replay's number (1 for the first; 0: not a replay), scheduler_api.storage.replay
    first: int = 1  # the number of the replay's first attempt
    # An alert's firing (scheduler_api.delivery.alerts): {"url", "body"}; None for a trigger's firing.
    alert: dict[str, Any] | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "id": self.id,
            "job": self.job_id,
            "v": self.version,
            "at": self.scheduled_at,
            "n": self.attempt,
            "tries": self.attempts,
        }
        if self.held:
            data["held"] = 1
        if self.send_at is not None:
            data["send"] = self.send_at
        data |= {"replay": self.replay, "from": self.first} if self.replay else {}
        if self.alert is not None:
            data["alert"] = self.alert
        return compact_json(data)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Firing:
        d = json.loads(raw)
        firing = cls(d["id"], d["job"], d["v"], float(d["at"]), int(d["n"]), list(d.get("tries") or []))
        if "held" in d or "send" in d or "replay" in d:
            firing.held = bool(d.get("held"))
            firing.send_at = d.get("send")
            firing.replay, firing.first = int(d.get("replay", 0)), int(d.get("from", 1))
        firing.alert = d.get("alert")
        return firing

    @property
    def due_at(self) -> float:
        """When the firing is meant to be sent: lateness is measured from here."""
        return self.send_at if self.send_at is not None else self.scheduled_at

    def next_attempt(self, tries: list[dict[str, Any]]) -> Firing:
        """The same firing, for its next attempt, carrying the attempts made so far."""
        return replace(self, attempt=self.attempt + 1, attempts=tries)


@dataclass(frozen=True)
class DuePlan:
    """What the scheduler decided for one due schedule entry: advance it from `expected_score` to
    `next_score` (None: the trigger has ended, the entry goes) if it still holds that score and
    `version`, and fire `firing` or record `missed_record` (or neither: the trigger is disabled or
    its workspace paused), under the trigger's `overlap` rule and `max_firings` (0: none)."""

    job_id: str
    expected_score: float
    version: str
    next_score: float | None
    firing: Firing | None
    missed_record: Record | None = None
    overlap: str = "allow"
    max_firings: int = 0


def commit_due(
    conn: Redis, batch_id: str, plans: Sequence[DuePlan], *, now: float, retention: Retention
) -> tuple[int, int]:
    """Apply `plans` where the schedule still holds what was read; return (fired, missed).

    Firings go into batch `batch_id`, jittered ones sent later into ``{batch_id}.{send time}``."""
    batches = {0.0: batch_id}  # send time -> batch id (0: now)
    groups: list[str] = []  # the workspaces' key groups (lua/trim.lua)
    slots: dict[str, int] = {}  # workspace id -> its group's number
    plain: list[Any] = []  # entries without overlap, max_firings or a later send time
    extended: list[Any] = []
    for p in plans:
        ws, idx = keys.split_job_id(p.job_id)
        slot = slots.get(ws)
        if slot is None:
            slot = slots[ws] = len(slots) + 1
            groups += (keys.workspace(ws), *keys.history_keys(ws), keys.state(ws))
        firing, missed = p.firing, p.missed_record
        if firing is not None:
            firing_id, firing_json, scheduled_at = firing.id, firing.to_json(), firing.scheduled_at
        elif missed is not None:
            firing_id, firing_json, scheduled_at = missed.id, "", missed.scheduled_at
        else:
            firing_id, firing_json, scheduled_at = "", "", 0.0  # (unused: nothing fires)
        entry = [p.job_id, repr(p.expected_score), slot, idx, p.version]
        entry += ["" if p.next_score is None else repr(p.next_score), firing_id, firing_json]
        entry += [missed.to_json() if missed is not None else "", repr(scheduled_at)]
        send = firing.send_at if firing is not None and firing.send_at is not None and firing.send_at > now else 0.0
        if p.overlap == "allow" and not p.max_firings and not send:
            plain += entry
            continue
        skipped = ""
        if firing is not None and p.overlap != "allow":
            skipped = Record.skipped(firing, ws, active_id="", finished_at=now).skipped_json_without_active_id()
        batch_no = list(batches).index(send) + 1 if send in batches else len(batches) + 1
        batches.setdefault(send, f"{batch_id}.{send:.0f}")
        extended += [*entry, "" if p.overlap == "allow" else p.overlap, p.max_firings, batch_no, skipped]
    args: list[Any] = [repr(now), *retention.args(), len(batches)]
    for send, bid in batches.items():
        args += [bid, repr(send or now)]
    args += [len(plain) // 10, *plain, len(extended) // 14, *extended]
    script_keys = [
        keys.SCHEDULE,
        keys.OUTBOX,
        keys.METRICS,
        keys.RETRY_DATA,
        series.record_keys(now)[0],
        *map(keys.batch, batches.values()),
        *groups,
    ]
    won, missed_count = scripts.run(conn, "commit_due", script_keys, args)
    return int(won), int(missed_count)


def enqueue_now(conn: Redis, trigger: StoredTrigger, *, now: float | None = None) -> str:
    """Fire `trigger` at once, outside its schedule ("run now"); return the firing id.

    The firing has the same retries and headers as a scheduled one; its scheduled time is now
    (with milliseconds, so two manual runs in one second stay distinct). It goes to the outbox in
    a batch of its own, which the next scheduler tick pushes to RQ.
    """
    ts = round(time.time() if now is None else now, 3)
    # Always with milliseconds, even .000: a scheduled firing's id has whole seconds only, so a
    # manual run never shares its id (and Idempotency-Key) with a scheduled one.
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    firing = Firing(f"{trigger.job_id}@{stamp}", trigger.job_id, trigger.version, ts)
    batch_id = uuid.uuid4().hex
    with redis_errors(), conn.pipeline(transaction=True) as pipe:
        pipe.hset(keys.batch(batch_id), firing.id, firing.to_json())
        pipe.zadd(keys.OUTBOX, {batch_id: ts})
        pipe.hincrby(keys.METRICS, Counter.ENQUEUED, 1)
        pipe.execute()
    return firing.id


def move_retries(conn: Redis, batch_id: str, *, now: float, limit: int) -> int:
    """Move up to `limit` due retries into a new batch; return how many moved."""
    moved = scripts.run(
        conn,
        "move_retries",
        [keys.RETRIES, keys.RETRY_DATA, keys.batch(batch_id), keys.OUTBOX],
        [batch_id, repr(now), limit],
    )
    return int(moved)


def claim_outbox(conn: Redis, *, now: float, retry_after: float, limit: int = 1000) -> list[str]:
    """Batch ids due to be pushed (or checked); each comes due again after `retry_after` s unless
    a worker has claimed it by then."""
    ids = scripts.run(conn, "claim_outbox", [keys.OUTBOX], [repr(now), retry_after, limit])
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


class Outcome(NamedTuple):
    """What became of one firing's attempt, as `record` stores it: `record` for every kind but
    DROPPED (the firing was not sent: its record goes), and the next attempt's firing `retry`,
    due at `retry_due`, for RETRYING. (A NamedTuple, as `Record`: one per delivery.)"""

    kind: OutcomeKind
    firing_id: str
    record: Record | None = None
    retry: Firing | None = None
    retry_due: float = 0.0
    scheduled_at: float = 0.0  # the firing's place in the history
    held: bool = False  # the firing is its trigger's active one (Firing.held): a final outcome lets go

    @classmethod
    def final(cls, record: Record, *, held: bool = False) -> Outcome:
        """Delivered, failed or blocked, as `record` says."""
        return cls(record.outcome, record.id, record, scheduled_at=record.scheduled_at, held=held)

    @classmethod
    def retrying(cls, record: Record, retry: Firing, retry_due: float) -> Outcome:
        return cls(OutcomeKind.RETRYING, record.id, record, retry, retry_due, record.scheduled_at, retry.held)

    @classmethod
    def dropped(cls, firing_id: str, *, held: bool = False) -> Outcome:
        return cls(OutcomeKind.DROPPED, firing_id, held=held)

    @property
    def workspace_id(self) -> str:
        return keys.workspace_of_firing(self.firing_id)


def record(
    conn: Redis,
    batch_id: str,
    outcomes: Sequence[Outcome],
    *,
    now: float,
    retention: Retention,
    finished: bool,
    back_at: float | None = None,
) -> int:
    """Store outcomes, schedule retries, trim retention; return firings left in the batch.

    With `finished`, the worker lets go of the batch: its lease is dropped and, if firings are
    left (a stopping worker did not start them, or their workspace had too many waiting in the
    worker), the batch goes back to the outbox, pushed at `back_at` (default: at once). A held
    firing's final outcome lets go of its trigger: a firing waiting for it (``buffer_one``) goes
    into a new batch, in the outbox at once (module docstring).
    """
    release_id = uuid.uuid4().hex  # the new batch of a waiting firing (unused when none is let go)
    script_keys = [keys.batch(batch_id), keys.RETRIES, keys.RETRY_DATA, keys.LEASES, keys.OUTBOX, keys.METRICS]
    script_keys += (keys.batch(release_id), *series.record_keys(now))
    slots: dict[str, int] = {}  # workspace id -> its key group's number in the script (lua/trim.lua)
    back = repr(back_at if back_at is not None else now) if finished else "0"
    args: list[Any] = [batch_id, repr(now), *retention.args(), back, release_id, len(outcomes)]
    for o in outcomes:
        ws = o.workspace_id
        slot = slots.get(ws)
        if slot is None:
            slot = slots[ws] = len(slots) + 1
            script_keys += (*keys.history_keys(ws), keys.state(ws))
        lets_go = o.held and o.kind is not OutcomeKind.RETRYING
        args += [
            o.kind.value,
            slot,
            o.firing_id,
            o.record.to_json() if o.record is not None else "",
            o.retry.to_json() if o.retry is not None else "",
            repr(o.retry_due),
            repr(o.scheduled_at),
            keys.split_job_id(o.firing_id.partition("@")[0])[1] if lets_go else "",
        ]
    script_keys[9:9] = [k for ws in slots for k in workspace_settings.record_keys(ws)]  # failure alerts
    return int(scripts.run(conn, "record", script_keys, args))


def load_batch(conn: Redis, batch_id: str) -> list[Firing]:
    return [Firing.from_json(raw) for raw in conn.hvals(keys.batch(batch_id))]


def get_record(conn: Redis, firing_id: str) -> dict[str, Any] | None:
    """One firing's record as the API shows it (`Record.to_dict`), or None."""
    raw = conn.hget(keys.records(keys.workspace_of_firing(firing_id)), firing_id)
    return Record.from_json(raw).to_view() if raw else None
