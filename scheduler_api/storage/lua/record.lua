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
-- KEYS[8] series        hash sa:series:{minute}: outcome kind -> count this minute
--                       (scheduler_api.storage.series; expires 86460 s after its last write)
-- KEYS[9] workspace day hash sa:wsday:{hour}: {ws}:d / {ws}:f -> delivered / failed or blocked
--                       final outcomes this hour (expires 90000 s after its last write)
-- KEYS[10 .. 9 + 3w] per workspace of the outcomes (w of them), 3 each: settings, definitions,
--         ETag (`count_outcome`), in the order of the groups below
-- KEYS[10 + 3w ..] per workspace of the outcomes, 5 each: records, history, done, failed, state
--         (sa:state:{id}: trigger id -> active firing id, id+ -> the waiting firing's JSON)
-- ARGV[1] batch id
-- ARGV[2] now
-- ARGV[3..6] retention: keep seconds, keep done, keep failed, keep history
-- ARGV[7] '0' while the worker keeps the batch; when it lets go, the time at which the firings
--         left in it (if any) are pushed again
-- ARGV[8] release id, the batch id of KEYS[7]
-- ARGV[9] n, the number of outcomes, then 8 per outcome: kind, workspace (its group's number in
--         KEYS[8..]), firing id, record JSON, retry firing JSON, retry due, scheduled time, and
--         the trigger id when the firing is held and this outcome is final ('' otherwise)
-- Kinds (scheduler_api.storage.history.OutcomeKind): delivered, failed, blocked (final, never
-- retried), retrying (the next attempt is scheduled), dropped (not sent: its record goes).
-- A held firing's final outcome lets go of its trigger (if it is still the active one): the
-- firing waiting for it (buffer_one) becomes the active one, in the release batch.
-- A final outcome counts toward its trigger's consecutive failures, which may raise an alert
-- firing (in the release batch too) and disable the trigger (`count_outcome`).
-- A replay's outcome (`replay_record`) adds "replays" to its record; a replay dropped unsent keeps
-- its record (`replay_dropped`). Returns how many firings are left in the batch.
local batch_key = KEYS[1]
local retries_key = KEYS[2]
local retry_data_key = KEYS[3]
local leases_key = KEYS[4]
local outbox_key = KEYS[5]
local metrics_key = KEYS[6]
local batch_id = ARGV[1]
local now = tonumber(ARGV[2])
local finished = ARGV[7] ~= '0'
local release_key = KEYS[7]
local release_id = ARGV[8]
local n = tonumber(ARGV[9])

-- #include trim.lua

-- A replay's outcome (scheduler_api.storage.replay). While a firing's replay is pending, the state
-- hash holds the field {firing id} -> the replay's number, set by replay.lua (a firing id holds
-- '@', a trigger id never does).
-- The record JSON to store for outcome `kind` (retrying or final) of firing `firing_id`: as given,
-- or for a replay with "replays" (its number) appended and the firing out of the done and failed
-- sets (the loop below adds it to the one its outcome belongs to); a final outcome ends the replay.
local function replay_record(ws, kind, firing_id, record_json)
  local number = redis.call('HGET', ws.state, firing_id)
  if not number then return record_json, false end
  if kind ~= 'retrying' then redis.call('HDEL', ws.state, firing_id) end
  redis.call('ZREM', ws.done, firing_id)
  redis.call('ZREM', ws.failed, firing_id)
  return string.sub(record_json, 1, -2) .. ',"replays":' .. number .. '}', true
end

-- A replay dropped unsent (its trigger was replaced or removed since): the replay ends and the
-- record stays as it was, a retrying one made failed (no attempt follows). False for any other
-- firing (its record goes).
local function replay_dropped(ws, firing_id)
  if redis.call('HDEL', ws.state, firing_id) == 0 then return false end
  local raw = redis.call('HGET', ws.records, firing_id)
  if raw then
    local rec = cjson.decode(raw)
    if rec['outcome'] == 'retrying' then
      rec['outcome'] = 'failed'
      rec['next_attempt_at'] = nil
      redis.call('HSET', ws.records, firing_id, cjson.encode(rec))
      redis.call('ZADD', ws.failed, now, firing_id)
    end
  end
  return true
end

local series_key = KEYS[8]
local day_key = KEYS[9]
local workspaces = workspace_groups(10 + 3 * (#KEYS - 9) / 8, false, true)
local keep = retention_at(3)
local final_counter = {
  delivered = {{Counter.OUTCOME_DELIVERED}},
  failed = {{Counter.OUTCOME_FAILED}},
  blocked = {{Counter.OUTCOME_BLOCKED}},
}
local touched = {}
local kind_counts = {}  -- outcome kind -> outcomes of this call (series_key)
local day_counts = {}  -- workspace group number -> {id, d, f}: its final outcomes of this call (day_key)
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

-- Failure alerts and auto-disable (scheduler_api.storage.workspace_settings), with the workspace
-- keys KEYS[10 .. 9 + 3w], 3 per workspace group: settings (sa:wsconf:{id}), definitions
-- (sa:ws:{id}), ETag (sa:etag:{id}). State fields (ws.state): {trigger id}! -> consecutive failed
-- firings, {trigger id}^ -> a failing or disabled alert was raised and no delivered firing followed.
local alerting = {}  -- workspace group number -> its settings, or false (no alerts, no auto-disable)
local raised = 0  -- alerts raised by this call (they are numbered in their ids)

-- The alert and auto-disable settings of workspace group `workspace`, read once per call.
local function alerting_of(workspace)
  local found = alerting[workspace]
  if found == nil then
    local at = 10 + (workspace - 1) * 3
    local values = redis.call('HMGET', KEYS[at], 'alert_url', 'alert_after', 'disable_after')
    found = false
    if values[1] or values[3] then
      found = {
        url = values[1],
        after = tonumber(values[2]),
        disable = tonumber(values[3]),
        definitions = KEYS[at + 1],
        etag = KEYS[at + 2],
      }
    end
    alerting[workspace] = found
  end
  return found
end

-- An alert `event` (failing, recovered, disabled) about trigger `index` (jobId `job_id`), caused
-- by firing `firing_id` (its stored record is the alert's last_record): a firing of the workspace's
-- alert job, in the release batch, pushed at once. Its JSON is built as text: the record goes in
-- as stored, numbers keep their digits.
local function raise_alert(ws, settings, event, job_id, index, firing_id, count)
  raised = raised + 1
  local workspace_id = string.sub(job_id, 1, #job_id - #index - 1)
  local alert_job = workspace_id .. ':~alert'
  local id = alert_job .. '@' .. index .. '.' .. event .. '.' .. string.sub(release_id, 1, 8) .. raised
  local body = '{"type":"trigger.' .. event .. '","workspace_id":' .. cjson.encode(workspace_id)
    .. ',"id":' .. cjson.encode(index) .. ',"jobId":' .. cjson.encode(job_id)
    .. ',"consecutive_failures":' .. count
    .. ',"last_record":' .. (redis.call('HGET', ws.records, firing_id) or 'null') .. '}'
  local firing = '{"id":' .. cjson.encode(id) .. ',"job":' .. cjson.encode(alert_job) .. ',"v":"","at":'
    .. ARGV[2] .. ',"n":1,"tries":[],"alert":{"url":' .. cjson.encode(settings.url) .. ',"body":' .. body .. '}}'
  redis.call('HSET', release_key, id, firing)
  redis.call('HINCRBY', metrics_key, {{Counter.ENQUEUED}}, 1)
  release_at = release_at and math.min(release_at, now) or now
end

-- Disable trigger `index` after `count` failures: its definition's own "on":true (the last one in
-- its JSON: the payload comes before it, the policy after it has no "on") becomes "on":false with
-- "off": {"reason", "at"}; its version is kept; the workspace gets a new ETag. False when the
-- trigger is gone or already disabled.
local function auto_disable(settings, index, count)
  local definition = redis.call('HGET', settings.definitions, index)
  if not definition then return false end
  local first, last, from = nil, nil, 1
  while true do
    local s, e = string.find(definition, '"on":true', from, true)
    if not s then break end
    first, last, from = s, e, e + 1
  end
  if not first then return false end
  local off = '"on":false,"off":{"reason":"auto-disabled after ' .. count .. ' consecutive failed firings","at":'
    .. ARGV[2] .. '}'
  redis.call('HSET', settings.definitions, index, string.sub(definition, 1, first - 1) .. off
    .. string.sub(definition, last + 1))
  redis.call('SET', settings.etag, string.sub(release_id, 1, 16))
  return true
end

-- Count the final outcome `kind` (delivered, failed or blocked) of firing `firing_id` of workspace
-- group `workspace` toward its trigger's consecutive failures (nothing for a workspace without
-- alerts and auto-disable, nor for an alert's own firing).
local function count_outcome(workspace, ws, kind, firing_id)
  local settings = alerting_of(workspace)
  if not settings then return end
  local job_id = string.match(firing_id, '^[^@]*')
  local index = string.match(job_id, '[^:]*$')
  if index == '~alert' then return end
  local field, flag = index .. '!', index .. '^'
  if kind == 'delivered' then
    if redis.call('HEXISTS', ws.state, flag) == 1 then
      local count = tonumber(redis.call('HGET', ws.state, field)) or 0
      redis.call('HDEL', ws.state, flag)
      if settings.url then raise_alert(ws, settings, 'recovered', job_id, index, firing_id, count) end
    end
    redis.call('HDEL', ws.state, field)
    return
  end
  local count = redis.call('HINCRBY', ws.state, field, 1)
  -- At or past the threshold (it may have been lowered under the count), once per transition: the
  -- flag stays until a delivered firing; a disabled trigger is not disabled again.
  if settings.url and settings.after and count >= settings.after and redis.call('HEXISTS', ws.state, flag) == 0 then
    redis.call('HSET', ws.state, flag, '1')
    raise_alert(ws, settings, 'failing', job_id, index, firing_id, count)
  end
  if settings.disable and count >= settings.disable and auto_disable(settings, index, count) then
    redis.call('HSET', ws.state, flag, '1')
    if settings.url then raise_alert(ws, settings, 'disabled', job_id, index, firing_id, count) end
  end
end

for i = 0, n - 1 do
  local at = 10 + i * 8
  local kind, workspace, firing_id = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
  local record_json, retry_json, retry_due = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local scheduled_at, held_by = ARGV[at + 6], ARGV[at + 7]
  local ws = workspaces[workspace]
  -- Absent: another worker recorded this firing already (it took the batch after this one's lease
  -- ran out): its record is written again, but it is not counted twice.
  local present = redis.call('HDEL', batch_key, firing_id) == 1
  -- The dashboard's counts (written after the loop) take every outcome, as the metrics counters do.
  kind_counts[kind] = (kind_counts[kind] or 0) + 1
  if final_counter[kind] then
    local day = day_counts[workspace]
    if not day then
      day = {id = string.match(string.match(firing_id, '^[^@]*'), '^(.*):'), d = 0, f = 0}
      day_counts[workspace] = day
    end
    if kind == 'delivered' then day.d = day.d + 1 else day.f = day.f + 1 end
  end
  if held_by ~= '' then let_go(ws, held_by, firing_id) end
  if kind == 'dropped' then
    if not replay_dropped(ws, firing_id) then
      redis.call('HDEL', ws.records, firing_id)
      redis.call('ZREM', ws.history, firing_id)
    end
  else
    local replayed
    record_json, replayed = replay_record(ws, kind, firing_id, record_json)
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
    -- Failure alerts count each scheduled or run-now firing once: not a replay of an old firing.
    if final_counter[kind] and present and not replayed then count_outcome(workspace, ws, kind, firing_id) end
    if kind == 'delivered' then
      redis.call('HINCRBY', metrics_key, {{Counter.ATTEMPT_OK}}, 1)
    elseif kind ~= 'blocked' then  -- a blocked attempt is never made
      redis.call('HINCRBY', metrics_key, {{Counter.ATTEMPT_ERROR}}, 1)
    end
  end
end
for workspace, _ in pairs(touched) do trim(workspaces[workspace], now, keep) end
-- The dashboard's counters (scheduler_api.storage.series): one HINCRBY per kind and per workspace.
if n > 0 then
  for kind, c in pairs(kind_counts) do redis.call('HINCRBY', series_key, kind, c) end
  redis.call('EXPIRE', series_key, 86460)
end
if next(day_counts) then
  for _, day in pairs(day_counts) do
    if day.d > 0 then redis.call('HINCRBY', day_key, day.id .. ':d', day.d) end
    if day.f > 0 then redis.call('HINCRBY', day_key, day.id .. ':f', day.f) end
  end
  redis.call('EXPIRE', day_key, 90000)
end
if release_at then redis.call('ZADD', outbox_key, string.format('%.6f', release_at), release_id) end
local left = redis.call('HLEN', batch_key)
if finished then
  redis.call('ZREM', leases_key, batch_id)
  if left > 0 then redis.call('ZADD', outbox_key, ARGV[7], batch_id) end
end
return left
