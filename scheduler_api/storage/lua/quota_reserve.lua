-- quota_reserve: check (and reserve) the room a write of one workspace needs in its key scope's
-- quotas (scheduler_api.storage.quotas.reserve), before the write itself.
--
-- KEYS[1] counted    hash sa:quota:ws:{scope}: workspace id -> its trigger count, for every
--                    workspace of the scope that has triggers (or a reservation)
-- KEYS[2] total      string sa:quota:triggers:{scope}: the sum of KEYS[1]'s counts
-- KEYS[3] built      string sa:quota:built:{scope}: set once KEYS[1] was built from the stored
--                    workspaces (absent: the caller builds it first)
-- ARGV[1] workspace id
-- ARGV[2] the workspace's trigger count after the write
-- ARGV[3] the most workspaces the scope may hold
-- ARGV[4] the most triggers the scope may hold
-- ARGV[5] '1' to reserve (the count is raised to ARGV[2] until the write's sync sets the truth),
--         '0' to check only (a dry run)
-- Returns {'ok'} | {'unbuilt'} | {'workspaces', held} | {'triggers', held}. Only growth is refused: a
-- write that adds no workspace and no trigger always passes, even over a lowered quota.
local counted_key = KEYS[1]
local total_key = KEYS[2]
local built_key = KEYS[3]
local workspace_id = ARGV[1]
local after = tonumber(ARGV[2])
local max_workspaces = tonumber(ARGV[3])
local max_triggers = tonumber(ARGV[4])
local reserve = ARGV[5] == '1'

if redis.call('EXISTS', built_key) == 0 then return {'unbuilt'} end
local before = tonumber(redis.call('HGET', counted_key, workspace_id) or '0')
if after <= before then return {'ok'} end
if before == 0 then
  local held = redis.call('HLEN', counted_key)
  if held >= max_workspaces then return {'workspaces', held} end
end
local total = tonumber(redis.call('GET', total_key) or '0')
if total - before + after > max_triggers then return {'triggers', total} end
if reserve then
  redis.call('HSET', counted_key, workspace_id, after)
  redis.call('INCRBY', total_key, after - before)
end
return {'ok'}
