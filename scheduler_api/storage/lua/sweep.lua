-- sweep: retention of workspaces whether or not they get new records, and the end of the history
-- of a workspace without triggers (scheduler_api.storage.firings.sweep).
--
-- KEYS[1] retired       sorted set sa:retired: workspaces whose last trigger was removed
-- KEYS[2..] per workspace, 5 each: definitions, records, history, done, failed
-- ARGV[1] now
-- ARGV[2..5] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[6..] the workspace ids, in the order of the key groups
-- Returns how many whole histories were dropped (a dropped one leaves sa:retired).
local now = tonumber(ARGV[1])
local retired_key = KEYS[1]

-- #include trim.lua

local keep = retention_at(2)
local dropped = 0
for i, ws in ipairs(workspace_groups(2, true)) do
  trim(ws, now, keep)
  if redis.call('EXISTS', ws.definitions) == 0 then
    -- No trigger left: the history goes once its newest finished record is past `keep.seconds`.
    local newest = -1
    for _, finished_key in ipairs({ws.done, ws.failed}) do
      local top = redis.call('ZREVRANGE', finished_key, 0, 0, 'WITHSCORES')
      if top[2] and tonumber(top[2]) > newest then newest = tonumber(top[2]) end
    end
    if newest <= now - keep.seconds then
      redis.call('DEL', ws.records, ws.history, ws.done, ws.failed)
      redis.call('ZREM', retired_key, ARGV[5 + i])
      dropped = dropped + 1
    end
  end
end
return dropped
