-- record: a worker's outcomes of finished firings: records, retries to schedule, retention and the
-- metrics counters, together (scheduler_api.storage.firings.record).
--
-- KEYS[1] batch         hash sa:batch:{batch id}: firing id -> firing JSON
-- KEYS[2] retries       sorted set sa:retries: firing id -> when its next attempt is due
-- KEYS[3] retry data    hash sa:retry-data: firing id -> firing JSON of that attempt
-- KEYS[4] leases        sorted set sa:leases: batch id -> when its worker's lease runs out
-- KEYS[5] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[6] metrics       hash sa:metrics
-- KEYS[7..] per workspace of the outcomes, 4 each: records, history, done, failed
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3..6] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[7] '1' when the worker lets go of the batch, else '0'
-- ARGV[8] n, the number of outcomes, then 7 per outcome: kind, workspace (its group's number in
--         KEYS[7..]), firing id, record JSON, retry firing JSON, retry due, scheduled time
-- Kinds (scheduler_api.storage.history.OutcomeKind): delivered, failed, blocked (final, never
-- retried), retrying (the next attempt is scheduled), dropped (not sent: its record goes).
-- Returns how many firings are left in the batch.
local batch_key = KEYS[1]
local retries_key = KEYS[2]
local retry_data_key = KEYS[3]
local leases_key = KEYS[4]
local outbox_key = KEYS[5]
local metrics_key = KEYS[6]
local batch_id = ARGV[1]
local now = tonumber(ARGV[2])
local finished = ARGV[7] == '1'
local n = tonumber(ARGV[8])

-- #include trim.lua

local workspaces = workspace_groups(7, false)
local keep = retention_at(3)
local final_counter = {
  delivered = {{Counter.OUTCOME_DELIVERED}},
  failed = {{Counter.OUTCOME_FAILED}},
  blocked = {{Counter.OUTCOME_BLOCKED}},
}
local touched = {}
for i = 0, n - 1 do
  local at = 9 + i * 7
  local kind, workspace, firing_id = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local record_json, retry_json, retry_due = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local scheduled_at = ARGV[at + 6]
  local ws = workspaces[workspace]
  redis.call('HDEL', batch_key, firing_id)
  if kind == 'dropped' then
    redis.call('HDEL', ws.records, firing_id)
    redis.call('ZREM', ws.history, firing_id)
  else
    redis.call('HSET', ws.records, firing_id, record_json)
    redis.call('ZADD', ws.history, scheduled_at, firing_id)
    touched[workspace] = true
    if kind == 'retrying' then
      redis.call('HSET', retry_data_key, firing_id, retry_json)
      redis.call('ZADD', retries_key, retry_due, firing_id)
      redis.call('HINCRBY', metrics_key, {{Counter.RETRY}}, 1)
    elseif kind == 'delivered' then
      redis.call('ZADD', ws.done, now, firing_id)
    else
      redis.call('ZADD', ws.failed, now, firing_id)
    end
    if final_counter[kind] then redis.call('HINCRBY', metrics_key, final_counter[kind], 1) end
    if kind == 'delivered' then
      redis.call('HINCRBY', metrics_key, {{Counter.ATTEMPT_OK}}, 1)
    elseif kind ~= 'blocked' then  -- a blocked attempt is never made
      redis.call('HINCRBY', metrics_key, {{Counter.ATTEMPT_ERROR}}, 1)
    end
  end
end
for workspace, _ in pairs(touched) do trim(workspaces[workspace], now, keep) end
local left = redis.call('HLEN', batch_key)
if finished then
  redis.call('ZREM', leases_key, batch_id)
  if left > 0 then redis.call('ZADD', outbox_key, now, batch_id) end
end
return left
