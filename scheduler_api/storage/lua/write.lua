-- write: one change of a workspace's triggers, definitions and schedule entries together, applied
-- only if what the change was planned on still holds (scheduler_api.storage.triggers.write).
--
-- KEYS[1] definitions   hash sa:ws:{workspace id}: trigger id -> definition JSON
-- KEYS[2] schedule      sorted set sa:schedule: jobId -> next run
-- KEYS[3] paused        set sa:paused of paused workspace ids
-- KEYS[4] etag          string sa:etag:{workspace id}: the workspace's ETag (absent, read as '0':
--                       no triggers)
-- KEYS[5] state         hash sa:state:{workspace id}: trigger id -> active firing id, id+ -> the
--                       waiting firing's JSON, id# -> firings counted toward max_firings,
--                       id! / id^ -> consecutive failures / an alert raised (lua/record.lua)
-- KEYS[6] workspaces    sorted set sa:workspaces: the ids of the workspaces that have triggers
--                       (scheduler_api.storage.workspace_index), score 0
-- KEYS[7] retired       sorted set sa:retired: workspaces whose last trigger was removed (their
--                       history waits for the retention sweep, scheduler_api.engine.retention)
-- ARGV[1] the workspace's jobId prefix, '{workspace id}:'
-- ARGV[2] the changes channel (sa:changed; a channel, not a key)
-- ARGV[3] workspace id
-- ARGV[4] '1' to lift the workspace's pause (a delete of the whole list), else '0'
-- ARGV[5] the ETags the client's If-Match names, separated by spaces ('' when it names none)
-- ARGV[6] the workspace's new ETag
-- ARGV[7] the ETag the change was planned on, when the whole workspace must be as read ('' = any)
-- ARGV[8] '1' when the change replaces the whole list (ids not written are removed), else '0'
-- ARGV[9] the most triggers the workspace may hold
-- ARGV[10] e, then 2 per expectation: trigger id, the definition JSON it was read as ('' = absent)
-- then u, then 3 per trigger written: id, definition JSON, next run ('' = keep its entry;
--         'end' = rescheduled but ended at once: no entry)
-- then d, then 1 per trigger deleted: id
-- Returns {'ok', triggers before} | {'precondition'} (If-Match) | {'conflict', id or ''} (what the
-- change was planned on no longer holds: the caller plans again) | {'too_many', count}. Nothing is written unless 'ok'.
-- A rescheduled trigger (a next run or 'end') restarts its max_firings count and loses its
-- waiting firing; a removed one loses its whole state (its active firing, if any, lets go when
-- the worker drops it); a workspace left without triggers loses its state hash.
local definitions_key = KEYS[1]
local schedule_key = KEYS[2]
local paused_key = KEYS[3]
local etag_key = KEYS[4]
local state_key = KEYS[5]
local index_key = KEYS[6]
local retired_key = KEYS[7]
local job_id_prefix = ARGV[1]
local changes_channel = ARGV[2]
local workspace_id = ARGV[3]
local unpause = ARGV[4] == '1'
local if_match = ARGV[5]
local new_etag = ARGV[6]
local planned_on = ARGV[7]
local whole_list = ARGV[8] == '1'
local max_triggers = tonumber(ARGV[9])

local at = 10
local expectations = tonumber(ARGV[at])
local expected_at = at + 1
at = expected_at + expectations * 2
local writes = tonumber(ARGV[at])
local written_at = at + 1
at = written_at + writes * 3
local deletes = tonumber(ARGV[at])
local deleted_at = at + 1

local current_etag = redis.call('GET', etag_key) or '0'
if if_match ~= '' then
  local matched = false
  for tag in string.gmatch(if_match, '%S+') do matched = matched or tag == current_etag end
  if not matched then return {'precondition'} end
end
if planned_on ~= '' and planned_on ~= current_etag then return {'conflict', ''} end
for i = 0, expectations - 1 do
  local id, read_as = ARGV[expected_at + i * 2], ARGV[expected_at + i * 2 + 1]
  if (redis.call('HGET', definitions_key, id) or '') ~= read_as then return {'conflict', id} end
end

local before = redis.call('HLEN', definitions_key)
local count = before
if whole_list then
  count = writes
else
  for i = 0, writes - 1 do
    if redis.call('HEXISTS', definitions_key, ARGV[written_at + i * 3]) == 0 then count = count + 1 end
  end
  for i = 0, deletes - 1 do
    if redis.call('HEXISTS', definitions_key, ARGV[deleted_at + i]) == 1 then count = count - 1 end
  end
end
if count > max_triggers then return {'too_many', count} end

if whole_list then
  local kept = {}
  for i = 0, writes - 1 do kept[ARGV[written_at + i * 3]] = true end
  for _, id in ipairs(redis.call('HKEYS', definitions_key)) do
    if not kept[id] then
      redis.call('HDEL', definitions_key, id)
      redis.call('ZREM', schedule_key, job_id_prefix .. id)
      redis.call('HDEL', state_key, id, id .. '+', id .. '#', id .. '!', id .. '^')
    end
  end
end
for i = 0, writes - 1 do
  local id, definition, next_run = ARGV[written_at + i * 3], ARGV[written_at + i * 3 + 1], ARGV[written_at + i * 3 + 2]
  redis.call('HSET', definitions_key, id, definition)
  if next_run ~= '' then
    if next_run == 'end' then
      redis.call('ZREM', schedule_key, job_id_prefix .. id)
    else
      redis.call('ZADD', schedule_key, next_run, job_id_prefix .. id)
    end
    redis.call('HDEL', state_key, id .. '+', id .. '#')
  end
end
for i = 0, deletes - 1 do
  local id = ARGV[deleted_at + i]
  redis.call('HDEL', definitions_key, id)
  redis.call('ZREM', schedule_key, job_id_prefix .. id)
  redis.call('HDEL', state_key, id, id .. '+', id .. '#', id .. '!', id .. '^')
end
if redis.call('HLEN', definitions_key) == 0 then
  redis.call('DEL', etag_key)
  redis.call('DEL', state_key)
  redis.call('ZREM', index_key, workspace_id)
  if before > 0 then redis.call('ZADD', retired_key, 0, workspace_id) end
else
  redis.call('SET', etag_key, new_etag)
  redis.call('ZADD', index_key, 0, workspace_id)
  redis.call('ZREM', retired_key, workspace_id)
end
-- Workers read the workspace's definitions again before their next request (scheduler_api.delivery.changes).
redis.call('PUBLISH', changes_channel, job_id_prefix)
if unpause then redis.call('SREM', paused_key, workspace_id) end
return {'ok', before}
