-- quota_sync: set a workspace's entry in the quota counts of its key scopes to what is stored
-- (scheduler_api.storage.quotas.sync): after every write (whatever its outcome, so a reservation
-- of a write that did not happen is given back), and when a scope's counts are first built.
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: its triggers (HLEN = the true count)
-- then 2 per scope:     hash sa:quota:ws:{scope} (workspace id -> trigger count) and
--                       string sa:quota:triggers:{scope} (the sum of that hash's counts)
-- ARGV[1] workspace id
-- ARGV[2] '1' when building a scope's counts: a workspace already counted is left as it is (it
--         may hold a reservation of a write in flight), else '0'
-- Returns the workspace's trigger count.
local definitions_key = KEYS[1]
local workspace_id = ARGV[1]
local only_new = ARGV[2] == '1'

local count = redis.call('HLEN', definitions_key)
for i = 2, #KEYS, 2 do
  local counted_key, total_key = KEYS[i], KEYS[i + 1]
  local held = redis.call('HGET', counted_key, workspace_id)
  local before = tonumber(held or '0')
  if only_new and held then
    count = before
  elseif count == 0 then
    redis.call('HDEL', counted_key, workspace_id)
  else
    redis.call('HSET', counted_key, workspace_id, count)
  end
  if count ~= before then redis.call('INCRBY', total_key, count - before) end
end
return count
