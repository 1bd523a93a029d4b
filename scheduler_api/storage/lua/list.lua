-- list: a workspace's definitions with their next run times and its ETag, read together
-- (scheduler_api.storage.triggers.read).
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: trigger id -> definition JSON
-- KEYS[2] schedule      sorted set sa:schedule: jobId -> next run
-- KEYS[3] etag          string sa:etag:{workspace id}
-- ARGV[1] the workspace's jobId prefix, '{workspace id}:'
-- Returns the ETag ('0' when the workspace has no triggers), then id, definition JSON and next run
-- ('' if none) for each trigger, flat.
local definitions_key = KEYS[1]
local schedule_key = KEYS[2]
local etag_key = KEYS[3]
local job_id_prefix = ARGV[1]

local definitions = redis.call('HGETALL', definitions_key)
local out = {redis.call('GET', etag_key) or '0'}
for i = 1, #definitions, 2 do
  local id, definition = definitions[i], definitions[i + 1]
  out[#out + 1] = id
  out[#out + 1] = definition
  out[#out + 1] = redis.call('ZSCORE', schedule_key, job_id_prefix .. id) or ''
end
return out
