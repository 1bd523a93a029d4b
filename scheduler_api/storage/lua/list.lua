-- list: a workspace's definitions with their next run times, read together
-- (scheduler_api.storage.triggers.list_triggers).
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: index -> definition JSON
-- KEYS[2] schedule      sorted set sa:schedule: jobId -> next run
-- ARGV[1] the workspace's jobId prefix, '{workspace id}:'
-- Returns index, definition JSON, next run ('' if none) for each trigger, flat.
local definitions_key = KEYS[1]
local schedule_key = KEYS[2]
local job_id_prefix = ARGV[1]

local definitions = redis.call('HGETALL', definitions_key)
local out = {}
for i = 1, #definitions, 2 do
  local index, definition = definitions[i], definitions[i + 1]
  out[#out + 1] = index
  out[#out + 1] = definition
  out[#out + 1] = redis.call('ZSCORE', schedule_key, job_id_prefix .. index) or ''
end
return out
