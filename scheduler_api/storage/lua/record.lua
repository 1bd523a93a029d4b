-- record: a worker's outcomes of finished firings: records, retries to schedule, retention, the
-- metrics counters, and held firings letting go of their trigger, together
-- (scheduler_api.storage.firings.record).
--
-- KEYS[1] batch         hash sa:batch:{batch id}: firing id -> firing JSON
-- KEYS[2] retries       sorted set sa:retries: firing id -> when its next attempt is due
-- KEYS[3] retry data    hash sa:retry-data: firing id -> firing JSON of that attempt
-- KEYS[4] leases        sorted set sa:leases: batch id -> when its worker's lease runs out
-- KEYS[5] outbox        sorted set sa:outbox: batch id -> when to push it
-- KEYS[6] metrics       hash sa:metrics
-- KEYS[7] release batch hash sa:batch:{release id}: the new batch of waiting firings let go here
-- KEYS[8..] per workspace of the outcomes, 5 each: records, history, done, failed, state
--         (sa:state:{id}: trigger id -> active firing id, id+ -> the waiting firing's JSON)
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3..6] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[7] '1' when the worker lets go of the batch, else '0'
-- ARGV[8] release id, the batch id of KEYS[7]
-- ARGV[9] n, the number of outcomes, then 8 per outcome: kind, workspace (its group's number in
--         KEYS[8..]), firing id, record JSON, retry firing JSON, retry due, scheduled time, and
--         the trigger id when the firing is held and this outcome is final ('' otherwise)
-- Kinds (scheduler_api.storage.history.OutcomeKind): delivered, failed, blocked (final, never
-- retried), retrying (the next attempt is scheduled), dropped (not sent: its record goes).
-- A held firing's final outcome lets go of its trigger (if it is still the active one): the
-- firing waiting for it (buffer_one) becomes the active one, in the release batch.
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
local release_key = KEYS[7]
local release_id = ARGV[8]
local n = tonumber(ARGV[9])

-- #include trim.lua

local workspaces = workspace_groups(8, false, true)
local keep = retention_at(3)
local final_counter = {
  delivered = {{Counter.OUTCOME_DELIVERED}},
  failed = {{Counter.OUTCOME_FAILED}},
  blocked = {{Counter.OUTCOME_BLOCKED}},
}
local touched = {}
local release_at = nil  -- when the release batch is pushed: now, or a later jittered send time

-- The held firing `firing_id` of trigger `index` ends: if still active, it lets go, and the
-- firing waiting (buffer_one) becomes the active one, sent at once (or at its send time).
local function let_go(ws, index, firing_id)
  if redis.call('HGET', ws.state, index) ~= firing_id then return end
  redis.call('HDEL', ws.state, index)
  local waiting = redis.call('HGET', ws.state, index .. '+')
  if not waiting then return end
  redis.call('HDEL', ws.state, index .. '+')
  local firing = cjson.decode(waiting)
  redis.call('HSET', ws.state, index, firing['id'])
  redis.call('HSET', release_key, firing['id'], waiting)
  redis.call('HINCRBY', metrics_key, {{Counter.ENQUEUED}}, 1)
  local push_at = math.max(now, tonumber(firing['send']) or now)
  release_at = release_at and math.min(release_at, push_at) or push_at
end

for i = 0, n - 1 do
  local at = 10 + i * 8
  local kind, workspace, firing_id = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local record_json, retry_json, retry_due = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local scheduled_at, held_by = ARGV[at + 6], ARGV[at + 7]
  local ws = workspaces[workspace]
  redis.call('HDEL', batch_key, firing_id)
  if held_by ~= '' then let_go(ws, held_by, firing_id) end
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
if release_at then redis.call('ZADD', outbox_key, string.format('%.6f', release_at), release_id) end
local left = redis.call('HLEN', batch_key)
if finished then
  redis.call('ZREM', leases_key, batch_id)
  if left > 0 then redis.call('ZADD', outbox_key, now, batch_id) end
end
return left
