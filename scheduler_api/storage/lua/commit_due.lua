-- commit_due: for each due schedule entry the scheduler read, advance it and write its firing
-- into a batch (or its missed record into the history) only if the entry still holds what was
-- read: compare-and-set on its score and its definition's version, so that of two schedulers
-- reading the same entry exactly one commits it (scheduler_api.storage.firings.commit_due).
--
-- KEYS[1] schedule      sorted set sa:schedule: jobId -> next run
-- KEYS[2] batch         hash sa:batch:{batch id}: firing id -> firing JSON
-- KEYS[3] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[4] metrics       hash sa:metrics
-- KEYS[5..] per workspace of the entries, 5 each: definitions, records, history, done, failed
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3..6] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[7] n, the number of entries, then 10 per entry: jobId, score read, workspace (its group's
--         number in KEYS[5..]), index, version read, next score, firing id, firing JSON ('' when
--         nothing fires), missed record JSON ('' when not missed), scheduled time
-- Returns {firings written, firings recorded as missed}.
local schedule_key = KEYS[1]
local batch_key = KEYS[2]
local outbox_key = KEYS[3]
local metrics_key = KEYS[4]
local batch_id = ARGV[1]
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[7])

-- #include trim.lua

local workspaces = workspace_groups(5, true)
local keep = retention_at(3)
local won, missed = 0, 0
local touched = {}
for i = 0, n - 1 do
  local at = 8 + i * 10
  local job_id, score_read, workspace = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local index, version_read, next_score = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local firing_id, firing_json = ARGV[at + 6], ARGV[at + 7]
  local missed_json, scheduled_at = ARGV[at + 8], ARGV[at + 9]
  local score = redis.call('ZSCORE', schedule_key, job_id)
  if score and tonumber(score) == tonumber(score_read) then
    local ws = workspaces[workspace]
    local definition = redis.call('HGET', ws.definitions, index)
    if not definition then
      redis.call('ZREM', schedule_key, job_id)  -- an entry without a definition (never left by the API)
    elseif cjson.decode(definition)['v'] == version_read then
      redis.call('ZADD', schedule_key, next_score, job_id)
      if firing_json ~= '' then
        redis.call('HSET', batch_key, firing_id, firing_json)
        won = won + 1
      end
      if missed_json ~= '' then
        redis.call('HSET', ws.records, firing_id, missed_json)
        redis.call('ZADD', ws.history, scheduled_at, firing_id)
        redis.call('ZADD', ws.failed, now, firing_id)
        touched[workspace] = true
        missed = missed + 1
      end
    end
  end
end
if won > 0 then
  redis.call('ZADD', outbox_key, now, batch_id)
  redis.call('HINCRBY', metrics_key, {{Counter.ENQUEUED}}, won)
end
if missed > 0 then redis.call('HINCRBY', metrics_key, {{Counter.MISSED}}, missed) end
for workspace, _ in pairs(touched) do trim(workspaces[workspace], now, keep) end
return {won, missed}
