-- commit_due: for each due schedule entry the scheduler read, advance it (or remove it: the
-- trigger has ended) and write its firing into a batch (or its missed record into the history)
-- only if the entry still holds what was read: compare-and-set on its score and its definition's
-- version, so that of two schedulers reading the same entry exactly one commits it. The same
-- step applies the trigger's overlap rule and max_firings in the workspace's state hash
-- (scheduler_api.storage.firings.commit_due).
--
-- KEYS[1] schedule      sorted set sa:schedule: jobId -> next run
-- KEYS[2] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[3] metrics       hash sa:metrics
-- KEYS[4] retry data    hash sa:retry-data: firing id -> firing JSON of its next attempt
-- KEYS[5] series        hash sa:series:{minute}: missed and skipped firings this minute
--                       (scheduler_api.storage.series; expires 86460 s after its last write)
-- KEYS[6..5+b] batches  hash sa:batch:{batch id}: firing id -> firing JSON, one per send time
-- KEYS[6+b..] per workspace of the entries, 6 each: definitions, records, history, done, failed,
--         state (sa:state:{id}: trigger id -> active firing id, id+ -> waiting firing JSON,
--         id# -> firings counted toward max_firings)
-- ARGV[1] now
-- ARGV[2..5] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[6] b, the number of batches, then 2 per batch: batch id, when to push it (the first: now)
-- then n, the number of plain entries (no overlap rule, no max_firings, sent in the first
--         batch), then 10 per entry: jobId, score read, workspace (its group's number in KEYS),
--         index, version read, next score ('' when the trigger has ended: the entry goes),
--         firing id, firing JSON ('' when nothing fires), missed record JSON ('' when not
--         missed), scheduled time
-- then m, the number of entries with a policy, then 14 per entry: the 10 above, the overlap
--         rule ('' allow, 'skip', 'buffer_one'), max_firings (0: none), the firing's batch (1..b),
--         its skipped record JSON without "active_id" (appended here; '' without overlap rule)
-- Returns {firings written, firings recorded as missed}.
local schedule_key = KEYS[1]
local outbox_key = KEYS[2]
local metrics_key = KEYS[3]
local retry_data_key = KEYS[4]
local series_key = KEYS[5]
local now = tonumber(ARGV[1])
local batch_count = tonumber(ARGV[6])

-- #include trim.lua

local batches = {}
for b = 1, batch_count do
  batches[b] = {key = KEYS[5 + b], id = ARGV[5 + b * 2], push_at = ARGV[6 + b * 2], size = 0}
end
local workspaces = workspace_groups(6 + batch_count, true, true)
local keep = retention_at(2)
local won, missed, skipped = 0, 0, 0
local touched = {}

local function send(b, firing_id, firing_json)
  local batch = batches[b]
  redis.call('HSET', batch.key, firing_id, firing_json)
  batch.size = batch.size + 1
  won = won + 1
end

-- A record of a firing that is not sent, in the history and in `finished` (the done or failed set).
local function store_record(ws, workspace, firing_id, record_json, scheduled_at, finished)
  redis.call('HSET', ws.records, firing_id, record_json)
  redis.call('ZADD', ws.history, scheduled_at, firing_id)
  redis.call('ZADD', finished, now, firing_id)
  touched[workspace] = true
end

-- A firing not sent because `active_id` is active: its record, kept like a delivered one.
local function skip(ws, workspace, firing_id, record_json, active_id, scheduled_at)
  local full = string.sub(record_json, 1, -2) .. ',"active_id":' .. cjson.encode(active_id) .. '}'
  store_record(ws, workspace, firing_id, full, scheduled_at, ws.done)
  skipped = skipped + 1
end

-- The trigger's active firing, unless it only waits for a retry of an older version of the trigger:
-- that one is dropped unsent when it comes due (a change of schedule drops the firings not started),
-- so it must not hold back the new version's firings until then.
local function active_firing(ws, index, version)
  local active = redis.call('HGET', ws.state, index)
  if active then
    local waiting = redis.call('HGET', retry_data_key, active)
    if waiting and cjson.decode(waiting)['v'] ~= version then return nil end
  end
  return active
end

-- A due firing of a trigger with an overlap rule or max_firings: sent (and held as the trigger's
-- active firing), waiting (buffer_one), or skipped. Returns true when the trigger has ended.
local function fire_by_policy(ws, workspace, index, version, firing_id, firing_json, at, scheduled_at)
  local mode, max_firings, b, skipped_json = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), ARGV[at + 3]
  if max_firings > 0 and (tonumber(redis.call('HGET', ws.state, index .. '#')) or 0) >= max_firings then
    return true  -- counted out already
  end
  if mode == '' then
    send(b, firing_id, firing_json)
  else
    local active = active_firing(ws, index, version)
    if not active then
      redis.call('HSET', ws.state, index, firing_id)
      send(b, firing_id, firing_json)
    elseif mode ~= 'buffer_one' or redis.call('HSETNX', ws.state, index .. '+', firing_json) == 0 then
      skip(ws, workspace, firing_id, skipped_json, active, scheduled_at)
      return false
    end
  end
  return max_firings > 0 and redis.call('HINCRBY', ws.state, index .. '#', 1) >= max_firings
end

local function commit(at, extended)
  local job_id, score_read, workspace = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local index, version_read, next_score = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local firing_id, firing_json = ARGV[at + 6], ARGV[at + 7]
  local missed_json, scheduled_at = ARGV[at + 8], ARGV[at + 9]
  local score = redis.call('ZSCORE', schedule_key, job_id)
  if not score or tonumber(score) ~= tonumber(score_read) then return end
  local ws = workspaces[workspace]
  local definition = redis.call('HGET', ws.definitions, index)
  if not definition then
    redis.call('ZREM', schedule_key, job_id)  -- an entry without a definition (never left by the API)
    return
  end
  if cjson.decode(definition)['v'] ~= version_read then return end
  local ended = next_score == ''
  if firing_json ~= '' then
    if extended then
      ended = fire_by_policy(ws, workspace, index, version_read, firing_id, firing_json, at + 10, scheduled_at) or ended
    else
      send(1, firing_id, firing_json)
    end
  end
  if missed_json ~= '' then
    store_record(ws, workspace, firing_id, missed_json, scheduled_at, ws.failed)
    missed = missed + 1
  end
  if ended then
    redis.call('ZREM', schedule_key, job_id)
  else
    redis.call('ZADD', schedule_key, next_score, job_id)
  end
end

local at = 7 + batch_count * 2
local plain = tonumber(ARGV[at])
for i = 0, plain - 1 do commit(at + 1 + i * 10, false) end
at = at + 1 + plain * 10
local with_policy = tonumber(ARGV[at])
for i = 0, with_policy - 1 do commit(at + 1 + i * 14, true) end

for _, batch in ipairs(batches) do
  if batch.size > 0 then redis.call('ZADD', outbox_key, batch.push_at, batch.id) end
end
if won > 0 then redis.call('HINCRBY', metrics_key, {{Counter.ENQUEUED}}, won) end
if missed > 0 then redis.call('HINCRBY', metrics_key, {{Counter.MISSED}}, missed) end
if skipped > 0 then redis.call('HINCRBY', metrics_key, {{Counter.OUTCOME_SKIPPED}}, skipped) end
if missed > 0 then redis.call('HINCRBY', series_key, 'missed', missed) end
if skipped > 0 then redis.call('HINCRBY', series_key, 'skipped', skipped) end
if missed > 0 or skipped > 0 then redis.call('EXPIRE', series_key, 86460) end
for workspace, _ in pairs(touched) do trim(workspaces[workspace], now, keep) end
return {won, missed}
