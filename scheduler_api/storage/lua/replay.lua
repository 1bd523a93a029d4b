-- replay: recorded firings sent again as themselves (scheduler_api.storage.replay). Each goes into
-- the batch, in the outbox at once, only if its record and its trigger's definition are still as
-- read, no replay of it is pending and its trigger's overlap rule lets it go; it then becomes the
-- pending replay of its firing (and, under an overlap rule, its trigger's active firing).
--
-- KEYS[1] definitions hash sa:ws:{workspace id}: trigger id -> definition JSON (version 'v')
-- KEYS[2] records     hash sa:rec:{workspace id}: firing id -> record JSON
-- KEYS[3] state       hash sa:state:{workspace id}: trigger id -> active firing id (overlap),
--                     firing id -> the number of its pending replay (set here; record.lua ends it)
-- KEYS[4] batch       hash sa:batch:{batch id}, a new batch: firing id -> firing JSON
-- KEYS[5] outbox      sorted set sa:outbox: batch id -> when to push it
-- KEYS[6] metrics     hash sa:metrics
-- ARGV[1] now
-- ARGV[2] batch id, of KEYS[4]
-- ARGV[3] n, then 7 per firing: firing id, trigger id, definition version read, record JSON read,
--         the replay's firing JSON, its replay number, the trigger's overlap rule ('' when allow)
-- Returns one answer per firing: 'ok' (in the batch), 'none' (no record), 'gone' (no trigger),
-- 'pending' (a replay of it not finished), 'active' (the overlap rule holds another firing of
-- its trigger active), 'changed' (record or definition no longer as read: read them again).
local definitions_key = KEYS[1]
local records_key = KEYS[2]
local state_key = KEYS[3]
local batch_key = KEYS[4]
local outbox_key = KEYS[5]
local metrics_key = KEYS[6]
local now = ARGV[1]
local batch_id = ARGV[2]
local n = tonumber(ARGV[3])

local answers = {}
local sent = 0

local function replay(firing_id, index, version_read, record_read, firing_json, number, overlap)
  local record = redis.call('HGET', records_key, firing_id)
  if not record then return 'none' end
  local definition = redis.call('HGET', definitions_key, index)
  if not definition then return 'gone' end
  if record ~= record_read or cjson.decode(definition)['v'] ~= version_read then return 'changed' end
  if redis.call('HEXISTS', state_key, firing_id) == 1 then return 'pending' end
  if overlap ~= '' then
    if redis.call('HEXISTS', state_key, index) == 1 then return 'active' end
    redis.call('HSET', state_key, index, firing_id)
  end
  redis.call('HSET', state_key, firing_id, number)
  redis.call('HSET', batch_key, firing_id, firing_json)
  sent = sent + 1
  return 'ok'
end

for i = 0, n - 1 do
  local at = 4 + i * 7
  answers[i + 1] = replay(ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6])
end
if sent > 0 then
  redis.call('ZADD', outbox_key, now, batch_id)
  redis.call('HINCRBY', metrics_key, {{Counter.ENQUEUED}}, sent)
end
return answers
