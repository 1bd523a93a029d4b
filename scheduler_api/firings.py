"""Firings in Redis: the atomic steps that move them from schedule to queue to outcome.

A firing is one due time of one trigger. Its id is ``{jobId}@{scheduled time ISO}``; its JSON
(`Firing`) travels in a batch hash (``sa:batch:{id}``), one batch per RQ job, and a retry is a
firing JSON in ``sa:retries``. Every step here is one Lua script, so each is all-or-nothing:

* `commit_due` (scheduler): for each due trigger, advance its schedule entry from the time it was
  read at to its next time *only if nobody else did* (compare-and-set on score and version), and
  add the firing to a batch. Two schedulers reading the same due entry: exactly one wins.
* `move_retries` (scheduler): due retries go into a batch; ZREM decides who moved each one.
* `claim_outbox` / `mark_pushed` (scheduler): a written batch is pushed to RQ at least once; a
  scheduler that dies between writing and pushing leaves it in the outbox, pushed 30 s later.
* `claim_lease` / `renew_lease` / `release` (worker) and `reap_leases` (scheduler): a batch whose
  worker stopped renewing its lease (killed) goes back to the outbox with its undelivered firings.
* `record` (worker): outcomes of finished firings, retries to schedule, retention trimming.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from scheduler_api import keys
from scheduler_api.store import run_script

_TRIM = """
local function trim(index, keep_seconds, keep_count, now)
  if keep_seconds >= 0 then
    local old = redis.call('ZRANGEBYSCORE', index, '-inf', now - keep_seconds)
    for _, fid in ipairs(old) do redis.call('HDEL', KEYS_RECORDS, fid) end
    if #old > 0 then redis.call('ZREMRANGEBYSCORE', index, '-inf', now - keep_seconds) end
  end
  local extra = redis.call('ZCARD', index) - keep_count
  if extra > 0 then
    local gone = redis.call('ZRANGE', index, 0, extra - 1)
    for _, fid in ipairs(gone) do redis.call('HDEL', KEYS_RECORDS, fid) end
    redis.call('ZREMRANGEBYRANK', index, 0, extra - 1)
  end
end
"""

_COMMIT_DUE = (
    "local KEYS_RECORDS = KEYS[4]\n"
    + _TRIM
    + """
-- KEYS: schedule, batch, outbox, records, failed
-- ARGV: batch id, now, failed keep count, n, then 9 per entry:
--   jobId, expected score, workspace key, index, version, next score, firing id, firing json, missed json
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local won = 0
local missed = 0
for i = 0, n - 1 do
  local b = 5 + i * 9
  local jid = ARGV[b]
  local score = redis.call('ZSCORE', KEYS[1], jid)
  if score and tonumber(score) == tonumber(ARGV[b + 1]) then
    local def = redis.call('HGET', ARGV[b + 2], ARGV[b + 3])
    if not def then
      redis.call('ZREM', KEYS[1], jid)
    elseif cjson.decode(def)['v'] == ARGV[b + 4] then
      redis.call('ZADD', KEYS[1], ARGV[b + 5], jid)
      if ARGV[b + 7] ~= '' then
        redis.call('HSET', KEYS[2], ARGV[b + 6], ARGV[b + 7])
        won = won + 1
      end
      if ARGV[b + 8] ~= '' then
        local rec = cjson.decode(ARGV[b + 8])
        redis.call('HSET', KEYS[4], rec['id'], ARGV[b + 8])
        redis.call('ZADD', KEYS[5], now, rec['id'])
        missed = missed + 1
      end
    end
  end
end
if won > 0 then redis.call('ZADD', KEYS[3], now, ARGV[1]) end
if missed > 0 then trim(KEYS[5], -1, tonumber(ARGV[3]), now) end
return {won, missed}
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
-- KEYS: leases, batch; ARGV: batch id, now, lease expiry
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
    "local KEYS_RECORDS = KEYS[2]\n"
    + _TRIM
    + """
-- KEYS: batch, records, done, failed, retries, retry-data, leases, outbox
-- ARGV: batch id, now, done keep seconds, done keep count, failed keep count, finished (0/1), n,
--       then 4 per item: kind (d delivered, f failed, r retry, x dropped), firing id, json, retry due
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[7])
local done, failed = 0, 0
for i = 0, n - 1 do
  local b = 8 + i * 4
  local kind, fid, data = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  redis.call('HDEL', KEYS[1], fid)
  if kind == 'd' then
    redis.call('HSET', KEYS[2], fid, data)
    redis.call('ZADD', KEYS[3], now, fid)
    done = done + 1
  elseif kind == 'f' then
    redis.call('HSET', KEYS[2], fid, data)
    redis.call('ZADD', KEYS[4], now, fid)
    failed = failed + 1
  elseif kind == 'r' then
    redis.call('HSET', KEYS[6], fid, data)
    redis.call('ZADD', KEYS[5], ARGV[b + 3], fid)
  end
end
if done > 0 then trim(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]), now) end
if failed > 0 then trim(KEYS[4], -1, tonumber(ARGV[5]), now) end
local left = redis.call('HLEN', KEYS[1])
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[7], ARGV[1])
  if left > 0 then redis.call('ZADD', KEYS[8], now, ARGV[1]) end
end
return left
"""
)


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
        return json.dumps(
            {
                "id": self.id,
                "job": self.job_id,
                "v": self.version,
                "at": self.scheduled_at,
                "n": self.attempt,
                "tries": self.attempts,
            },
            separators=(",", ":"),
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
    conn: Redis, batch_id: str, plans: Sequence[DuePlan], *, now: float, failed_keep: int
) -> tuple[int, int]:
    """Apply `plans` where the schedule still holds what was read; return (fired, missed)."""
    args: list[Any] = [batch_id, repr(now), failed_keep, len(plans)]
    for p in plans:
        ws, idx = keys.split_job_id(p.job_id)
        args += [
            p.job_id,
            repr(p.expected_score),
            keys.workspace(ws),
            idx,
            p.version,
            repr(p.next_score),
            p.firing.id if p.firing else "",
            p.firing.to_json() if p.firing else "",
            json.dumps(p.missed_record, separators=(",", ":")) if p.missed_record else "",
        ]
    won, missed = run_script(
        conn,
        _COMMIT_DUE,
        [keys.SCHEDULE, keys.batch(batch_id), keys.OUTBOX, keys.RECORDS, keys.FAILED],
        args,
    )
    return int(won), int(missed)


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
    """Batch ids due to be pushed to RQ; each comes due again after `retry_after` s unless marked."""
    ids = run_script(conn, _CLAIM_OUTBOX, [keys.OUTBOX], [repr(now), retry_after, limit])
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def claim_lease(conn: Redis, batch_id: str, *, now: float, lease_seconds: float) -> int:
    """1: this worker now holds the batch; 0: nothing left in it; -1: another worker holds it."""
    return int(
        run_script(
            conn,
            _CLAIM_LEASE,
            [keys.LEASES, keys.batch(batch_id)],
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
    """A finished firing attempt, as `record` stores it."""

    kind: str  # 'd' delivered, 'f' failed for good, 'r' retry scheduled, 'x' dropped
    firing_id: str
    data: str = ""
    retry_due: float = 0.0


def record(
    conn: Redis,
    batch_id: str,
    outcomes: Sequence[Outcome],
    *,
    now: float,
    keep_seconds: int,
    keep_done: int,
    keep_failed: int,
    finished: bool,
) -> int:
    """Store outcomes, schedule retries, trim retention; return firings left in the batch.

    With `finished`, the worker lets go of the batch: its lease is dropped and, if firings are
    left (a stopping worker did not start them), the batch goes back to the outbox at once.
    """
    args: list[Any] = [batch_id, repr(now), keep_seconds, keep_done, keep_failed, int(finished), len(outcomes)]
    for o in outcomes:
        args += [o.kind, o.firing_id, o.data, repr(o.retry_due)]
    left = run_script(
        conn,
        _RECORD,
        [
            keys.batch(batch_id),
            keys.RECORDS,
            keys.DONE,
            keys.FAILED,
            keys.RETRIES,
            keys.RETRY_DATA,
            keys.LEASES,
            keys.OUTBOX,
        ],
        args,
    )
    return int(left)


def load_batch(conn: Redis, batch_id: str) -> list[Firing]:
    return [Firing.from_json(raw) for raw in conn.hvals(keys.batch(batch_id))]


def get_record(conn: Redis, firing_id: str) -> dict[str, Any] | None:
    raw = conn.hget(keys.RECORDS, firing_id)
    return json.loads(raw) if raw else None
