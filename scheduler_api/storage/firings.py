"""Firings in Redis: the atomic steps that move them from schedule to queue to outcome.

A firing is one due time of one trigger. Its id is ``{jobId}@{scheduled time ISO}``; its JSON
(`Firing`) travels in a batch hash (``sa:batch:{id}``), one batch per RQ job, and a retry is a
firing JSON in ``sa:retries``. Every step here is one Lua script, so each is all-or-nothing:

* `commit_due` (scheduler): for each due trigger, advance its schedule entry from the time it was
  read at to its next time *only if nobody else did* (compare-and-set on score and version), and
  add the firing to a batch. Two schedulers reading the same due entry: exactly one wins.
* `move_retries` (scheduler): due retries go into a batch; ZREM decides who moved each one.
* `claim_outbox` (scheduler): a written batch stays in the outbox until a worker takes it: a
  scheduler that dies between writing and pushing leaves it there, pushed 30 s later; one whose
  RQ job ended without a worker taking it (the job failed before, a worker was killed between
  taking the job and claiming the batch, the queue was emptied) is pushed again when the
  scheduler finds that job gone (scheduler_api.engine.scheduler.push_outbox).
* `claim_lease` / `renew_lease` (worker; `record` lets go) and `reap_leases` (scheduler): claiming takes
  the batch out of the outbox; a batch whose worker stopped renewing its lease (killed) goes back
  to the outbox with its undelivered firings.
* `record` (worker): outcomes of finished firings, retries to schedule, retention trimming (per
  workspace, see scheduler_api.storage.history) and the metrics counters, in the same script.
* `enqueue_manual` (API, "run now"): one firing outside the schedule, into the outbox.
* `sweep` (scheduler): retention of workspaces that get no new records, and the end of the
  history of a workspace without triggers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis

from scheduler_api.storage import keys
from scheduler_api.storage.triggers import compact_json, run_script

_TRIM = """
-- Retention of one workspace's records (see scheduler_api.storage.history). `P` is the key prefix.
local function trim(P, ws, now, keep_seconds, keep_done, keep_failed, keep_hist)
  local rec, hist, done, failed = P .. 'rec:' .. ws, P .. 'hist:' .. ws, P .. 'done:' .. ws, P .. 'failed:' .. ws
  local function drop(ids)
    for _, id in ipairs(ids) do
      redis.call('HDEL', rec, id)
      redis.call('ZREM', hist, id)
      redis.call('ZREM', done, id)
      redis.call('ZREM', failed, id)
    end
  end
  if keep_seconds >= 0 then drop(redis.call('ZRANGEBYSCORE', done, '-inf', now - keep_seconds)) end
  local extra = redis.call('ZCARD', done) - keep_done
  if extra > 0 then drop(redis.call('ZRANGE', done, 0, extra - 1)) end
  extra = redis.call('ZCARD', failed) - keep_failed
  if extra > 0 then drop(redis.call('ZRANGE', failed, 0, extra - 1)) end
  extra = redis.call('ZCARD', hist) - keep_hist
  if extra > 0 then drop(redis.call('ZRANGE', hist, 0, extra - 1)) end
end
"""

_COMMIT_DUE = (
    _TRIM
    + """
-- KEYS: schedule, batch, outbox, metrics
-- ARGV: batch id, now, prefix, keep seconds, keep done, keep failed, keep history, n, then 11 per entry:
--   jobId, expected score, workspace key, index, version, next score, firing id, firing json,
--   missed record json, workspace id, scheduled time
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[8])
local won, missed = 0, 0
-- A definition cjson cannot read (one stored before the API refused what it cannot, such as an
-- unpaired surrogate escape) must not stop the script half-way: its version is found as text.
local function version_of(def)
  local ok, decoded = pcall(cjson.decode, def)
  if ok then return decoded['v'] end
  return string.match(def, '^{"v":"([^"]*)"')  -- store.StoredTrigger.to_json writes it first
end
local touched = {}
for i = 0, n - 1 do
  local b = 9 + i * 11
  local jid = ARGV[b]
  local score = redis.call('ZSCORE', KEYS[1], jid)
  if score and tonumber(score) == tonumber(ARGV[b + 1]) then
    local def = redis.call('HGET', ARGV[b + 2], ARGV[b + 3])
    if not def then
      redis.call('ZREM', KEYS[1], jid)
    elseif version_of(def) == ARGV[b + 4] then
      redis.call('ZADD', KEYS[1], ARGV[b + 5], jid)
      if ARGV[b + 7] ~= '' then
        redis.call('HSET', KEYS[2], ARGV[b + 6], ARGV[b + 7])
        won = won + 1
      end
      if ARGV[b + 8] ~= '' then
        local ws = ARGV[b + 9]
        redis.call('HSET', ARGV[3] .. 'rec:' .. ws, ARGV[b + 6], ARGV[b + 8])
        redis.call('ZADD', ARGV[3] .. 'hist:' .. ws, ARGV[b + 10], ARGV[b + 6])
        redis.call('ZADD', ARGV[3] .. 'failed:' .. ws, now, ARGV[b + 6])
        touched[ws] = true
        missed = missed + 1
      end
    end
  end
end
if won > 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'enqueued', won)
end
if missed > 0 then redis.call('HINCRBY', KEYS[4], 'missed', missed) end
for ws, _ in pairs(touched) do
  trim(ARGV[3], ws, now, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
end
return {won, missed}
"""
)

_SWEEP = (
    _TRIM
    + """
-- ARGV: now, prefix, keep seconds, keep done, keep failed, keep history, then workspace ids
local now, P, keep_seconds = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local dropped = 0
for i = 7, #ARGV do
  local ws = ARGV[i]
  trim(P, ws, now, keep_seconds, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
  if redis.call('EXISTS', P .. 'ws:' .. ws) == 0 then
    local newest = -1
    for _, k in ipairs({P .. 'done:' .. ws, P .. 'failed:' .. ws}) do
      local top = redis.call('ZREVRANGE', k, 0, 0, 'WITHSCORES')
      if top[2] and tonumber(top[2]) > newest then newest = tonumber(top[2]) end
    end
    if newest <= now - keep_seconds then
      redis.call('DEL', P .. 'rec:' .. ws, P .. 'hist:' .. ws, P .. 'done:' .. ws, P .. 'failed:' .. ws)
      dropped = dropped + 1
    end
  end
end
return dropped
"""
)

_MOVE_RETRIES = """
-- KEYS: retries, retry-data, batch, outbox; ARGV: batch id, now, max
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = 0
for _, fid in ipairs(due) do
  if redis.call('ZREM', KEYS[1], fid) == 1 then
    local data = redis.call('HGET', KEYS[2], fid)
    redis.call('HDEL', KEYS[2], fid)
    if data then
      redis.call('HSET', KEYS[3], fid, data)
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1]) end
return moved
"""

_CLAIM_OUTBOX = """
-- KEYS: outbox; ARGV: now, retry after (s), max. Claimed entries come due again after `retry after`.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, bid in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), bid)
end
return due
"""

_CLAIM_LEASE = """
-- KEYS: leases, batch, outbox, pushed; ARGV: batch id, now, lease expiry
-- Whatever the answer, the job that asks has taken the batch off the outbox.
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) > tonumber(ARGV[2]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

_REAP_LEASES = """
-- KEYS: leases, outbox; ARGV: now, batch key prefix
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1000)
local requeued = 0
for _, bid in ipairs(expired) do
  redis.call('ZREM', KEYS[1], bid)
  if redis.call('EXISTS', ARGV[2] .. bid) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], bid)
    requeued = requeued + 1
  end
end
return requeued
"""

_RECORD = (
    _TRIM
    + """
-- KEYS: batch, retries, retry-data, leases, outbox, metrics
-- ARGV: batch id, now, prefix, keep seconds, keep done, keep failed, keep history, finished (0/1), n,
--       then 7 per item: kind, workspace id, firing id, record json, retry json, retry due, scheduled time
-- kinds: d delivered, f failed, b blocked (final, never retried), r retry scheduled, x dropped unsent
local now = tonumber(ARGV[2])
local P = ARGV[3]
local n = tonumber(ARGV[9])
local touched = {}
local outcome_name = {d = 'delivered', f = 'failed', b = 'blocked'}
for i = 0, n - 1 do
  local b = 10 + i * 7
  local kind, ws, fid = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  redis.call('HDEL', KEYS[1], fid)
  if kind == 'x' then
    redis.call('HDEL', P .. 'rec:' .. ws, fid)
    redis.call('ZREM', P .. 'hist:' .. ws, fid)
  else
    redis.call('HSET', P .. 'rec:' .. ws, fid, ARGV[b + 3])
    redis.call('ZADD', P .. 'hist:' .. ws, ARGV[b + 6], fid)
    touched[ws] = true
    if kind == 'r' then
      redis.call('HSET', KEYS[3], fid, ARGV[b + 4])
      redis.call('ZADD', KEYS[2], ARGV[b + 5], fid)
      redis.call('HINCRBY', KEYS[6], 'retry', 1)
    elseif kind == 'd' then
      redis.call('ZADD', P .. 'done:' .. ws, now, fid)
    else
      redis.call('ZADD', P .. 'failed:' .. ws, now, fid)
    end
    if outcome_name[kind] then redis.call('HINCRBY', KEYS[6], 'outcome:' .. outcome_name[kind], 1) end
    if kind == 'd' then
      redis.call('HINCRBY', KEYS[6], 'attempt:ok', 1)
    elseif kind ~= 'b' then
      redis.call('HINCRBY', KEYS[6], 'attempt:error', 1)
    end
  end
end
for ws, _ in pairs(touched) do
  trim(P, ws, now, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
end
local left = redis.call('HLEN', KEYS[1])
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  if left > 0 then redis.call('ZADD', KEYS[5], now, ARGV[1]) end
end
return left
"""
)


@dataclass(frozen=True)
class Retention:
    """How long records are kept, per workspace (see scheduler_api.storage.history)."""

    keep_seconds: int
    keep_done: int
    keep_failed: int
    keep_history: int

    @classmethod
    def from_settings(cls, settings: Any) -> Retention:
        return cls(
            settings.completed_keep_seconds,
            settings.completed_keep_count,
            settings.failed_keep_count,
            settings.history_cap,
        )

    def args(self) -> list[int]:
        return [self.keep_seconds, self.keep_done, self.keep_failed, self.keep_history]


@dataclass
class Firing:
    """One due time of one trigger, with the attempts made so far."""

    id: str
    job_id: str
    version: str
    scheduled_at: float
    attempt: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return compact_json(
            {
                "id": self.id,
                "job": self.job_id,
                "v": self.version,
                "at": self.scheduled_at,
                "n": self.attempt,
                "tries": self.attempts,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Firing:
        d = json.loads(raw)
        return cls(d["id"], d["job"], d["v"], float(d["at"]), int(d["n"]), list(d.get("tries") or []))


@dataclass(frozen=True)
class DuePlan:
    """What the scheduler decided for one due schedule entry."""

    job_id: str
    expected_score: float
    version: str
    next_score: float
    firing: Firing | None
    missed_record: dict[str, Any] | None = None


def commit_due(
    conn: Redis, batch_id: str, plans: Sequence[DuePlan], *, now: float, retention: Retention
) -> tuple[int, int]:
    """Apply `plans` where the schedule still holds what was read; return (fired, missed)."""
    args: list[Any] = [batch_id, repr(now), keys.PREFIX, *retention.args(), len(plans)]
    for p in plans:
        ws, idx = keys.split_job_id(p.job_id)
        missed_id = p.missed_record["id"] if p.missed_record else ""
        args += [
            p.job_id,
            repr(p.expected_score),
            keys.workspace(ws),
            idx,
            p.version,
            repr(p.next_score),
            p.firing.id if p.firing else missed_id,
            p.firing.to_json() if p.firing else "",
            compact_json(p.missed_record) if p.missed_record else "",
            ws,
            repr(p.firing.scheduled_at if p.firing else _missed_at(p)),
        ]
    won, missed = run_script(
        conn,
        _COMMIT_DUE,
        [keys.SCHEDULE, keys.batch(batch_id), keys.OUTBOX, keys.METRICS],
        args,
    )
    return int(won), int(missed)


def _missed_at(plan: DuePlan) -> float:
    """The scheduled time of a plan's missed firing: its place in the history (newest first)."""
    if plan.missed_record is None:
        return plan.next_score  # unused: nothing is recorded for this plan
    return datetime.fromisoformat(plan.missed_record["scheduled_at"]).timestamp()


def enqueue_manual(conn: Redis, batch_id: str, firing: Firing, *, now: float) -> None:
    """Put one firing outside the schedule ("run now") into its own batch in the outbox."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.hset(keys.batch(batch_id), firing.id, firing.to_json())
        pipe.zadd(keys.OUTBOX, {batch_id: now})
        pipe.hincrby(keys.METRICS, "enqueued", 1)
        pipe.execute()


def sweep(conn: Redis, workspace_ids: Sequence[str], *, now: float, retention: Retention) -> int:
    """Apply retention to workspaces whether or not they get new records; return how many whole
    histories were dropped.

    Records are trimmed when a workspace gets a new one, so a quiet workspace would keep delivered
    records past `COMPLETED_KEEP_SECONDS`, and one with no trigger left would keep its history
    for ever: the scheduler sweeps every workspace with a history (scheduler_api.engine.scheduler).
    A workspace with no trigger loses its whole history (failed records included) once its newest
    finished record is `COMPLETED_KEEP_SECONDS` old.
    """
    if not workspace_ids:
        return 0
    return int(run_script(conn, _SWEEP, [], [repr(now), keys.PREFIX, *retention.args(), *workspace_ids]))


def move_retries(conn: Redis, batch_id: str, *, now: float, limit: int) -> int:
    """Move up to `limit` due retries into a new batch; return how many moved."""
    moved = run_script(
        conn,
        _MOVE_RETRIES,
        [keys.RETRIES, keys.RETRY_DATA, keys.batch(batch_id), keys.OUTBOX],
        [batch_id, repr(now), limit],
    )
    return int(moved)


def claim_outbox(conn: Redis, *, now: float, retry_after: float, limit: int = 1000) -> list[str]:
    """Batch ids due to be pushed (or checked); each comes due again after `retry_after` s unless
    a worker has claimed it by then."""
    ids = run_script(conn, _CLAIM_OUTBOX, [keys.OUTBOX], [repr(now), retry_after, limit])
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def claim_lease(conn: Redis, batch_id: str, *, now: float, lease_seconds: float) -> int:
    """1: this worker now holds the batch; 0: nothing left in it; -1: another worker holds it."""
    return int(
        run_script(
            conn,
            _CLAIM_LEASE,
            [keys.LEASES, keys.batch(batch_id), keys.OUTBOX, keys.PUSHED],
            [batch_id, repr(now), repr(now + lease_seconds)],
        )
    )


def renew_lease(conn: Redis, batch_id: str, *, until: float) -> None:
    conn.zadd(keys.LEASES, {batch_id: until}, xx=True)


def reap_leases(conn: Redis, *, now: float) -> int:
    """Batches whose lease ran out go back to the outbox; return how many."""
    return int(run_script(conn, _REAP_LEASES, [keys.LEASES, keys.OUTBOX], [repr(now), keys.BATCH_PREFIX]))


@dataclass(frozen=True)
class Outcome:
    """What became of one firing's attempt, as `record` stores it."""

    kind: str  # 'd' delivered, 'f' failed for good, 'b' blocked, 'r' retry scheduled, 'x' dropped unsent
    firing_id: str
    record: str = ""  # the record JSON shown in the history ('d', 'f', 'b', 'r')
    retry: str = ""  # the next attempt's firing JSON ('r')
    retry_due: float = 0.0
    scheduled_at: float = 0.0

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
) -> int:
    """Store outcomes, schedule retries, trim retention; return firings left in the batch.

    With `finished`, the worker lets go of the batch: its lease is dropped and, if firings are
    left (a stopping worker did not start them), the batch goes back to the outbox at once.
    """
    args: list[Any] = [batch_id, repr(now), keys.PREFIX, *retention.args(), int(finished), len(outcomes)]
    for o in outcomes:
        args += [o.kind, o.workspace_id, o.firing_id, o.record, o.retry, repr(o.retry_due), repr(o.scheduled_at)]
    left = run_script(
        conn,
        _RECORD,
        [keys.batch(batch_id), keys.RETRIES, keys.RETRY_DATA, keys.LEASES, keys.OUTBOX, keys.METRICS],
        args,
    )
    return int(left)


def load_batch(conn: Redis, batch_id: str) -> list[Firing]:
    return [Firing.from_json(raw) for raw in conn.hvals(keys.batch(batch_id))]


def get_record(conn: Redis, firing_id: str) -> dict[str, Any] | None:
    raw = conn.hget(keys.records(keys.workspace_of_firing(firing_id)), firing_id)
    return json.loads(raw) if raw else None
