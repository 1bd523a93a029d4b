-- replace: a workspace's whole trigger list, definitions and schedule entries together
-- (scheduler_api.storage.triggers.replace; delete is a replace with no triggers and `unpause`).
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: index -> definition JSON
-- KEYS[2] schedule      sorted set sa:schedule: jobId -> next run
-- KEYS[3] paused        set sa:paused of paused workspace ids
-- ARGV[1] the workspace's jobId prefix, '{workspace id}:'
-- ARGV[2] the changes channel (sa:changed; a channel, not a key)
-- ARGV[3] '1' to lift the workspace's pause (delete), else '0'
-- ARGV[4] workspace id
-- ARGV[5] n, the number of triggers, then 3 per trigger: index, definition JSON, next run
-- Returns how many triggers the workspace had.
local definitions_key = KEYS[1]
local schedule_key = KEYS[2]
local paused_key = KEYS[3]
local job_id_prefix = ARGV[1]
local changes_channel = ARGV[2]
local unpause = ARGV[3] == '1'
local workspace_id = ARGV[4]
local n = tonumber(ARGV[5])

local old = redis.call('HKEYS', definitions_key)
for _, index in ipairs(old) do redis.call('ZREM', schedule_key, job_id_prefix .. index) end
redis.call('DEL', definitions_key)
for i = 0, n - 1 do
  local at = 6 + i * 3
  local index, definition, next_run = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  redis.call('HSET', definitions_key, index, definition)
  redis.call('ZADD', schedule_key, next_run, job_id_prefix .. index)
end
-- Workers drop the workspace's queued firings at once (scheduler_api.delivery.changes).
redis.call('PUBLISH', changes_channel, job_id_prefix)
if unpause then redis.call('SREM', paused_key, workspace_id) end
return #old
