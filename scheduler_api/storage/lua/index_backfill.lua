-- index_backfill: add to the workspace index the workspaces, among those found by a SCAN, that
-- still have triggers (scheduler_api.storage.workspace_index.backfill). Checked here, in the same
-- step as the add, so that a workspace emptied by a write since the SCAN is not added back.
--
-- KEYS[1] workspaces    sorted set sa:workspaces: workspace id -> 0
-- KEYS[2..] definitions hash sa:ws:{workspace id}, one per id of ARGV, in the same order
-- ARGV[1..] workspace ids
-- Returns how many were added (already indexed ones are not counted).
local index_key = KEYS[1]

local added = 0
for i, workspace_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    added = added + redis.call('ZADD', index_key, 'NX', 0, workspace_id)
  end
end
return added
